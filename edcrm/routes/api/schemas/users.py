"""The bodies of the user list (admins: their branch's people, e.g. to reassign a lead)."""

from __future__ import annotations

import enum
from typing import Annotated

from pydantic import Field

from ....models import Role
from ..inputs import Choice, QueryModel
from .base import Answer


class Flag(enum.StrEnum):
    TRUE = "true"
    FALSE = "false"


class UserQuery(QueryModel):
    role: Annotated[Role, Choice()] | None = Field(None, description="Only the users of this role.")
    active: Annotated[Flag, Choice()] | None = Field(
        None, description="Only the active users (`true`) or the deactivated ones (`false`)."
    )


class BranchUser(Answer):
    id: int
    email: str
    role: Role
    active: bool
    branch_id: int


class UserList(Answer):
    items: list[BranchUser]
