"""GET /api/users: an admin's list of their branch's people (whom to reassign a lead to, say)."""

from __future__ import annotations

import sqlalchemy as sa
from flask import g

from ...auth import api_auth
from ...extensions import db
from ...models import Role, User
from ...permissions import visible_users
from . import bp
from .schemas.users import Flag, UserList, UserQuery
from .serializers import branch_user_json
from .spec import FORBIDDEN, UNAUTHORIZED, VALIDATION_FAILED, operation


@bp.get("/users")
@api_auth(Role.ADMIN)
@operation(
    "listUsers",
    "users",
    HTTP_200=(UserList, "The branch's users, by id."),
    HTTP_401=UNAUTHORIZED,
    HTTP_403=FORBIDDEN,
    HTTP_422=VALIDATION_FAILED,
)
def list_users(query: UserQuery):
    """The users of the admin's branch, by role and by whether they are active (admins only)"""
    stmt = sa.select(User).where(visible_users(g.user))
    if query.role is not None:
        stmt = stmt.where(User.role == query.role)
    if query.active is not None:
        stmt = stmt.where(User.active.is_(query.active is Flag.TRUE))
    users = db.session.execute(stmt.order_by(User.id)).scalars()
    return {"items": [branch_user_json(user) for user in users]}
