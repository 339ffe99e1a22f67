"""Parsing what API clients send: JSON objects and query strings, with every field error at once."""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Mapping
from typing import Any, TypeVar

from flask import request

from ..errors import ApiError

#: A JSON body is a handful of fields; anything bigger is a mistake (files go through uploads).
MAX_JSON_BYTES = 1024 * 1024

_MISSING = object()

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


class Fields:
    """Reads fields of a JSON object (or, with text=True, of a query string) and collects the errors,
    so that a client learns about every bad field in one answer: call check() once all are read."""

    def __init__(self, data: Mapping[str, Any], *, text: bool = False):
        self.data, self.text, self.errors = data, text, {}

    def _get(self, name: str, required: bool):
        value = self.data.get(name, _MISSING)
        if value is _MISSING or value is None or (self.text and value == ""):
            if required:
                self.errors[name] = "is required"
            return _MISSING
        return value

    def integer(
        self,
        name: str,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
        required: bool = True,
        default: int | None = None,
    ) -> int | None:
        value = self._get(name, required)
        if value is _MISSING:
            return default
        if self.text and isinstance(value, str):
            with contextlib.suppress(ValueError):  # not a number: answered below
                value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self.errors[name] = "must be a whole number"
            return None
        if minimum is not None and value < minimum:
            self.errors[name] = f"must be at least {minimum}"
        elif maximum is not None and value > maximum:
            self.errors[name] = f"must be at most {maximum}"
        return value

    def string(
        self, name: str, *, max_length: int, required: bool = True, default: str | None = None
    ) -> str | None:
        value = self._get(name, required)
        if value is _MISSING:
            return default
        if not isinstance(value, str):
            self.errors[name] = "must be a string"
            return None
        if required and not value.strip():
            self.errors[name] = "is required"
        elif len(value) > max_length:
            self.errors[name] = f"must be at most {max_length} characters"
        return value

    def choice(self, name: str, choices: type[E], *, required: bool = True) -> E | None:
        value = self._get(name, required)
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
