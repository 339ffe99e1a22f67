"""Path converters. The `int` of every route's path (`<int:call_log_id>`): ASCII digits only, within a
database id.

Werkzeug's own `int` converter matches `\\d`, which is any Unicode digit: `/api/call-logs/%EF%BC%90` (a
full-width zero) would reach a route as 0, and an id past 2^31-1 (the INTEGER columns) would reach the
database, which refuses to compare it. This one leaves such a path unmatched, so it is a 404 like any
unknown path, and route files keep writing `<int:...>`.
"""

from __future__ import annotations

import re

from flask import Flask
from werkzeug.routing import BaseConverter, IntegerConverter, ValidationError

from ..permissions import MAX_ID

#: Digits of MAX_ID: a longer run of digits is out of range without converting it.
_MAX_DIGITS = len(str(MAX_ID))


class StrictIntegerConverter(IntegerConverter):
    """0..MAX_ID (or the route's own min/max within it), in ASCII digits without a leading zero."""

    regex = r"[0-9]+"

    def to_python(self, value: str) -> int:
        if len(value) > _MAX_DIGITS or (len(value) > 1 and value.startswith("0")):
            raise ValidationError()
        number = super().to_python(value)
        if number > MAX_ID:
            raise ValidationError()
        return number


class JobIdConverter(BaseConverter):
    """A job id in a path (`<job_id:job_id>`): one segment of at most 64 characters, other than the
    names of the routes beside it. `/api/jobs/retry-failed` is then not also the job `retry-failed`: a
    GET of it is a 405, and its `Allow` lists only its own methods (werkzeug gathers those from every
    rule whose pattern matches the path, so the pattern itself leaves the names out)."""

    RESERVED = ("retry-failed",)
    regex = "".join(rf"(?!{re.escape(name)}\Z)" for name in RESERVED) + r"[^/]{1,64}"


def init_app(app: Flask) -> None:
    """Install the converters: before any route is added, as rules look converters up when added."""
    app.url_map.converters["int"] = StrictIntegerConverter
    app.url_map.converters["job_id"] = JobIdConverter
