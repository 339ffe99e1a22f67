"""The bodies of signing in with the API (POST /api/auth/token)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from ....models import Role
from ..inputs import RequestModel, Text
from .base import Answer


class TokenRequest(RequestModel):
    email: Annotated[str, Text(254)]
    password: Annotated[str, Text(1024)]
    name: Annotated[str, Text(80, required=False)] | None = Field(
        "api", description="A label, e.g. the device."
    )


class User(Answer):
    id: int
    email: str
    role: Role
    branch_id: int


class TokenResponse(Answer):
    token: str
    user: User
