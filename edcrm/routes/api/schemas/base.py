"""What the API's bodies share: Answer, the base of every answer; the patterns and types of fields
that several resources have; and the error answer."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

UPLOAD_ID = "^[0-9a-f]{32}$"
SHA256 = "^[0-9a-fA-F]{64}$"
NonNegative = Annotated[int, Field(ge=0)]
Binary: dict[str, Any] = {"type": "string", "format": "binary"}


def _no_defaults(schema: dict[str, Any]) -> None:
    """An answer's optional keys are absent or present, never filled in: no defaults to document."""
    for prop in schema.get("properties", {}).values():
        prop.pop("default", None)


class Answer(BaseModel):
    """An answer's body: checked, never altered, so extra keys are kept."""

    model_config = ConfigDict(extra="allow", json_schema_extra=_no_defaults)


class ErrorDetail(Answer):
    code: str = Field(pattern="^[a-z][a-z0-9_]*$", examples=["validation_failed"])
    message: str
    fields: dict[str, str] | None = Field(
        None, description="validation_failed: what is wrong with each field."
    )


class Error(Answer):
    """Every 4xx and 503 of the API."""

    error: ErrorDetail
