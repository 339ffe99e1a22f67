"""Keyset pagination with cursors: no duplicate and no gap while rows are added.

A cursor is opaque to clients (they send back the `next` of a page), but its form is exact and
documented (LeadCursor and JobCursor, in the OpenAPI document): every string of that form continues
some page, and any other string is a 422. So a cursor never fails for being well-formed but unknown,
and tools that read the document (schemathesis) know the cursors the API takes.
"""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import sqlalchemy as sa
from pydantic import BeforeValidator, Field, RootModel

from ...extensions import db
from ...jobs.listing import Position
from ...permissions import MAX_ID
from .inputs import invalid

DEFAULT_LIMIT, MAX_LIMIT = 50, 500

#: An id cursor: the id a page ended at (0..MAX_ID), as 4 big-endian bytes in unpadded base64url. The
#: first character keeps the top bit 0 (ids are below 2^31) and the last one's unused bits are 0, so
#: each id has exactly one cursor and each such string is the cursor of an id.
ID_CURSOR = re.compile(r"[A-Za-f][A-Za-z0-9_-]{4}[AQgw]")

#: A job cursor: where a page of jobs (newest first) ended, as `MICROSECONDS.JOB_ID`, the microseconds
#: since 1970 (UTC) its last job was enqueued at, and that job's id (Dramatiq message ids are UUIDs).
JOB_CURSOR = re.compile(r"([0-9]{1,17})\.([0-9A-Za-z_-]{1,64})")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NOT_OURS = "is not a cursor this API returned"


def encode_cursor(after_id: int) -> str:
    return base64.urlsafe_b64encode(after_id.to_bytes(4, "big")).decode().rstrip("=")


def decode_cursor(cursor: str) -> int | None:
    """The id a cursor continues after, or None if it is not a cursor."""
    if not isinstance(cursor, str) or not ID_CURSOR.fullmatch(cursor):
        return None
    after = int.from_bytes(base64.urlsafe_b64decode(cursor + "=="), "big")
    return after if after <= MAX_ID else None  # the pattern rules it out; kept as the invariant


def encode_job_cursor(position: Position) -> str:
    micros = (position.enqueued_at.astimezone(UTC) - _EPOCH) // timedelta(microseconds=1)
    return f"{micros}.{position.job_id}"


def decode_job_cursor(cursor: str) -> Position | None:
    """The position a job cursor continues after, or None if it is not a job cursor."""
    match = JOB_CURSOR.fullmatch(cursor) if isinstance(cursor, str) else None
    if match is None:
        return None
    return Position(_EPOCH + timedelta(microseconds=int(match[1])), match[2])


def _cursor_of(form: re.Pattern) -> BeforeValidator:
    def check(value: Any) -> str:
        if not isinstance(value, str) or not form.fullmatch(value):
            raise invalid(_NOT_OURS)
        return value

    return BeforeValidator(check)


class LeadCursor(RootModel[Annotated[str, Field(pattern=f"^{ID_CURSOR.pattern}$"), _cursor_of(ID_CURSOR)]]):
    """An id cursor: 6 characters of unpadded base64url."""

    def after(self) -> int | None:
        return decode_cursor(self.root)


class JobCursor(RootModel[Annotated[str, Field(pattern=f"^{JOB_CURSOR.pattern}$"), _cursor_of(JOB_CURSOR)]]):
    """A job cursor: `MICROSECONDS.JOB_ID`."""

    def after(self) -> Position | None:
        return decode_job_cursor(self.root)


def paginate(stmt: sa.Select, id_column, limit: int, after: int | None) -> tuple[list, str | None]:
    """One page of stmt in id order, and the cursor of the next page (None on the last one)."""
    if after is not None:
        stmt = stmt.where(id_column > after)
    rows = list(db.session.execute(stmt.order_by(id_column).limit(limit + 1)).scalars())
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1].id)
