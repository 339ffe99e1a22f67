"""The bodies of the service's own endpoints: the health check and the OpenAPI document."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, RootModel

from .base import Answer

_Check = Annotated[
    str, Field(description="`ok`, or `down: ErrorType`.", examples=["ok", "down: OperationalError"])
]


class Health(Answer):
    database: _Check
    broker: _Check
    storage: _Check


class OpenApiDocument(RootModel[dict[str, Any]]):
    """The OpenAPI 3.1 document of this API."""
