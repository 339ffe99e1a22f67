"""Parsing what API clients send: JSON objects and query strings, with every field error at once.

Integers are database-sized everywhere (edcrm.permissions.MAX_ID at most, 1 at least unless a field
says otherwise): a bigger one is a 422 here, never an overflow in the database. In a query string an
integer is ASCII digits without a leading zero (a `-` before them for a negative one); in JSON it is a
number without a fractional part (`86400.0` is 86400, as JSON Schema's `integer` has it). `null` in
JSON is an absent field, and so is an empty string field in a query string (an empty integer or choice
is invalid). edcrm/openapi.json says the same, field by field.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping
from typing import Any, TypeVar

from flask import request

from ...permissions import MAX_ID
from ..errors import ApiError

#: A JSON body is a handful of fields; anything bigger is a mistake (files go through uploads).
MAX_JSON_BYTES = 1024 * 1024

_MISSING = object()

#: A required string must hold more than these (ASCII whitespace: the document's pattern names them).
BLANKS = " \t\n\r\f\v"

#: An integer in a query string: ASCII digits without a leading zero (int() would also take "٣", " 3",
#: "+3", "3_0" and "007").
_QUERY_INTEGER = re.compile(r"-?(?:0|[1-9][0-9]{0,19})")

E = TypeVar("E", bound=enum.Enum)


def json_object() -> dict[str, Any]:
    """The request's JSON object: 415 for another content type, 422 for bad JSON or a non-object."""
    if not request.is_json:
        message = "Send a JSON object with Content-Type: application/json."
        raise ApiError(415, "unsupported_media_type", message)
    if request.max_content_length is None or request.max_content_length > MAX_JSON_BYTES:
        request.max_content_length = MAX_JSON_BYTES  # reading more answers 413
    body = request.get_json(silent=True)
    if body is None:
        raise ApiError(422, "invalid_json", "The body is not valid JSON.")
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_json", "The body must be a JSON object.")
    return body


def optional_json_object() -> dict[str, Any]:
    """The request's JSON object, or {} for a request without a body, whether the body is framed by
    Content-Length or sent chunked (`Transfer-Encoding: chunked`: no Content-Length at all)."""
    if request.max_content_length is None or request.max_content_length > MAX_JSON_BYTES:
        request.max_content_length = MAX_JSON_BYTES
    if not request.get_data(cache=True):  # cached: json_object() reads the same bytes
        return {}
    return json_object()


class Fields:
    """Reads fields of a JSON object (or, with text=True, of a query string) and collects the errors,
    so that a client learns about every bad field in one answer: call check() once all are read."""

    def __init__(self, data: Mapping[str, Any], *, text: bool = False):
        self.data, self.text, self.errors = data, text, {}

    def _get(self, name: str, required: bool, *, empty_is_missing: bool = True):
        value = self.data.get(name, _MISSING)
        if value is _MISSING or value is None or (self.text and empty_is_missing and value == ""):
            if required:
                self.errors[name] = "is required"
            return _MISSING
        return value

    def integer(
        self,
        name: str,
        *,
        minimum: int = 1,
        maximum: int = MAX_ID,
        required: bool = True,
        default: int | None = None,
    ) -> int | None:
        """A whole number within minimum..maximum (by default 1..MAX_ID; never past MAX_ID)."""
        value = self._get(name, required, empty_is_missing=False)
        if value is _MISSING:
            return default
        number = self._whole_number(value)
        if number is None:
            self.errors[name] = "must be a whole number"
            return None
        maximum = min(maximum, MAX_ID)
        if number < minimum:
            self.errors[name] = f"must be at least {minimum}"
            return None
        if number > maximum:
            self.errors[name] = f"must be at most {maximum}"
            return None
        return number

    def _whole_number(self, value: Any) -> int | None:
        if self.text:
            if isinstance(value, str) and _QUERY_INTEGER.fullmatch(value):
                return int(value)
            return None
        if isinstance(value, bool):
            return None
        if isinstance(value, int):
            return value
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        return None

    def string(
        self, name: str, *, max_length: int, required: bool = True, default: str | None = None
    ) -> str | None:
        value = self._get(name, required)
        if value is _MISSING:
            return default
        if not isinstance(value, str):
            self.errors[name] = "must be a string"
            return None
        if required and not value.strip(BLANKS):
            self.errors[name] = "is required"
        elif len(value) > max_length:
            self.errors[name] = f"must be at most {max_length} characters"
        return value

    def choice(self, name: str, choices: type[E], *, required: bool = True) -> E | None:
        value = self._get(name, required, empty_is_missing=False)
        if value is _MISSING:
            return None
        try:
            return choices(value)
        except (ValueError, TypeError):
            allowed = ", ".join(str(member.value) for member in choices)
            self.errors[name] = f"must be one of: {allowed}"
            return None

    def error(self, name: str, message: str) -> None:
        self.errors.setdefault(name, message)

    def check(self) -> None:
        """422 with {"fields": {name: message}} if any field was invalid."""
        if self.errors:
            names = ", ".join(sorted(self.errors))
            raise ApiError(422, "validation_failed", f"Invalid fields: {names}.", fields=self.errors)
