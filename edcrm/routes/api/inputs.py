"""What API clients send, as typed fields: the strictness rules every request model is built from, and
the reading of JSON bodies and query strings with every field error at once.

Integers are database-sized everywhere (edcrm.permissions.MAX_ID at most, 1 at least unless a field
says otherwise): a bigger one is a 422 here, never an overflow in the database. In a query string an
integer is ASCII digits without a leading zero (a `-` before them for a negative one); in JSON it is a
number without a fractional part (`86400.0` is 86400, as JSON Schema's `integer` has it). `null` in
JSON is an absent field, and so is an empty string field in a query string (an empty integer or choice
is invalid). The field types below carry these rules into both the validation and the OpenAPI document.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from flask import request
from pydantic import (
    BaseModel,
    ConfigDict,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    ValidationError,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError, core_schema

from ...permissions import MAX_ID
from ..errors import ApiError

#: A JSON body is a handful of fields; anything bigger is a mistake (files go through uploads).
MAX_JSON_BYTES = 1024 * 1024

#: A required string must hold more than these (ASCII whitespace: the document's pattern names them).
BLANKS = " \t\n\r\f\v"
NOT_BLANK = "[^ \\t\\n\\r\\f\\v]"

#: An integer in a query string: ASCII digits without a leading zero (int() would also take "٣", " 3",
#: "+3", "3_0" and "007").
_QUERY_INTEGER = re.compile(r"-?(?:0|[1-9][0-9]{0,19})")

#: pydantic's error types of the constraints the fields declare, as this API words them.
_MESSAGES: dict[str, Callable[[dict], str]] = {
    "missing": lambda ctx: "is required",
    "greater_than_equal": lambda ctx: f"must be at least {ctx['ge']}",
    "less_than_equal": lambda ctx: f"must be at most {ctx['le']}",
    "string_too_long": lambda ctx: f"must be at most {ctx['max_length']} characters",
}


def invalid(message: str) -> PydanticCustomError:
    """A field error with this API's message (raised by the fields' validators)."""
    return PydanticCustomError("invalid_field", message)


class RequestModel(BaseModel):
    """A JSON body: unknown fields are ignored, and `null` is an absent field (its default applies)."""

    model_config = ConfigDict(frozen=True)

    #: True where a request without a body stands for `{}` (framed by Content-Length or chunked).
    body_optional: ClassVar[bool] = False

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {name: value for name, value in data.items() if value is not None}
        return data


def _query_parameters(schema: dict[str, Any]) -> None:
    """A query string has no `null`: its parameters are documented without one."""
    for prop in schema.get("properties", {}).values():
        variants = prop.pop("anyOf", None)
        if variants is not None:
            (kept,) = [variant for variant in variants if variant.get("type") != "null"]
            prop.update(kept)
        if prop.get("default", ...) is None:
            del prop["default"]
        prop.pop("title", None)


class QueryModel(BaseModel):
    """A query string: each field is its first value; unknown parameters are ignored."""

    model_config = ConfigDict(frozen=True, json_schema_extra=_query_parameters)


# -- fields: `Annotated[int, Integer(1, 500)]`, `Annotated[str, Text(80)]`, `Annotated[E, Choice()]` ---


def _whole_number(value: Any) -> int:
    if isinstance(value, bool):
        raise invalid("must be a whole number")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    raise invalid("must be a whole number")


def _query_integer(value: Any) -> int:
    if isinstance(value, str) and _QUERY_INTEGER.fullmatch(value):
        return int(value)
    raise invalid("must be a whole number")


@dataclass(frozen=True)
class Integer:
    """A whole number within minimum..maximum (by default 1..MAX_ID; never past MAX_ID). In a query
    string (query=True) it is written in ASCII digits, and an empty value is invalid."""

    minimum: int = 1
    maximum: int = MAX_ID
    query: bool = False

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        bounded = core_schema.int_schema(ge=self.minimum, le=min(self.maximum, MAX_ID))
        whole = _query_integer if self.query else _whole_number
        return core_schema.no_info_before_validator_function(whole, bounded)


def _string(required: bool) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise invalid("must be a string")
        if required and not value.strip(BLANKS):
            raise invalid("is required")
        return value

    return check


@dataclass(frozen=True)
class Text:
    """A string of at most max_length characters; a required one holds more than blanks. form is the
    pattern the document gives, checked by the domain code that reads the field (its own 422)."""

    max_length: int
    required: bool = True
    form: str | None = None

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        bounded = core_schema.str_schema(min_length=1 if self.required else None, max_length=self.max_length)
        return core_schema.no_info_before_validator_function(_string(self.required), bounded)

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        documented = handler(schema)
        pattern = NOT_BLANK if self.required else self.form
        if pattern:
            documented["pattern"] = pattern
        return documented


def _empty_is_absent(value: Any) -> Any:
    return None if value == "" else value


@dataclass(frozen=True)
class QueryText:
    """A free-text filter of a query string (`Annotated[str | None, QueryText(120)]`): empty, no filter."""

    max_length: int

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        text = core_schema.nullable_schema(core_schema.str_schema(max_length=self.max_length))
        return core_schema.no_info_before_validator_function(_empty_is_absent, text)


@dataclass(frozen=True)
class Choice:
    """One of the annotated enum's values (in a query string too: there an empty value is invalid)."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        allowed = ", ".join(str(member.value) for member in source)

        def member(value: Any) -> enum.Enum:
            try:
                return source(value)
            except (ValueError, TypeError):
                raise invalid(f"must be one of: {allowed}") from None

        return core_schema.no_info_before_validator_function(member, handler(source))


M = TypeVar("M", bound=BaseModel)


# -- reading a request ---------------------------------------------------------------------------------


def field_errors(error: ValidationError) -> dict[str, str]:
    """{field: message} of a model's validation error, one message per field (its first)."""
    errors: dict[str, str] = {}
    for detail in error.errors(include_url=False, include_input=False):
        name = str(detail["loc"][0]) if detail["loc"] else "body"
        word = _MESSAGES.get(detail["type"])
        errors.setdefault(name, word(detail.get("ctx") or {}) if word else detail["msg"])
    return errors


def validation_failed(errors: Mapping[str, str]) -> ApiError:
    """422 with {"fields": {name: message}}: every bad field at once."""
    names = ", ".join(sorted(errors))
    return ApiError(422, "validation_failed", f"Invalid fields: {names}.", fields=dict(errors))


def parse(model: type[M], data: Mapping[str, Any], **extra_errors: str) -> M:
    """data as a model, or a 422 naming every bad field (with extra_errors, found before it)."""
    try:
        parsed = model.model_validate(data)
    except ValidationError as error:
        raise validation_failed({**field_errors(error), **extra_errors}) from None
    if extra_errors:
        raise validation_failed(extra_errors)
    return parsed


def json_object() -> dict[str, Any]:
    """The request's JSON object: 415 for another content type, 422 for bad JSON or a non-object."""
    if not request.is_json:
        message = "Send a JSON object with Content-Type: application/json."
        raise ApiError(415, "unsupported_media_type", message)
    _limit_json_body()
    body = request.get_json(silent=True)
    if body is None:
        raise ApiError(422, "invalid_json", "The body is not valid JSON.")
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_json", "The body must be a JSON object.")
    return body


def optional_json_object() -> dict[str, Any]:
    """The request's JSON object, or {} for a request without a body, whether the body is framed by
    Content-Length or sent chunked (`Transfer-Encoding: chunked`: no Content-Length at all)."""
    _limit_json_body()
    if not request.get_data(cache=True):  # cached: json_object() reads the same bytes
        return {}
    return json_object()


def _limit_json_body() -> None:
    if request.max_content_length is None or request.max_content_length > MAX_JSON_BYTES:
        request.max_content_length = MAX_JSON_BYTES  # reading more answers 413
