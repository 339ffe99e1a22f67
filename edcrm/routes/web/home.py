"""GET /: who is signed in, and where to go from here."""

from __future__ import annotations

import sqlalchemy as sa
from flask import g, render_template

from ...auth import page_auth
from ...extensions import db
from ...models import CallLog, Lead, Role, User
from ...permissions import visible_call_logs, visible_leads, visible_users
from . import bp, links_for

#: More places for the home page, shown when they exist: (path, label, roles).
HOME_LINKS = [
    ("/imports/new", "Import leads from a CSV", (Role.ADMIN,)),
    ("/imports", "Past imports", (Role.ADMIN,)),
    ("/jobs", "Background jobs", (Role.ADMIN,)),
    ("/api/docs", "The API's interactive documentation", ()),
    ("/api/openapi.json", "The API (OpenAPI document)", ()),
    ("/healthz", "Health of the database, broker and storage", (Role.ADMIN,)),
]


def _count(stmt: sa.Select) -> int:
    return db.session.execute(sa.select(sa.func.count()).select_from(stmt.subquery())).scalar_one()


@bp.get("/")
@page_auth()
def index():
    user = g.user
    stats = {"leads": _count(sa.select(Lead.id).where(visible_leads(user)))}
    if user.is_admin:
        telecallers = sa.select(User.id).where(
            visible_users(user), User.role == Role.TELECALLER, User.active.is_(True)
        )
        stats["telecallers"] = _count(telecallers)
    else:
        stats["calls"] = _count(sa.select(CallLog.id).join(CallLog.lead).where(visible_call_logs(user)))
    return render_template("index.html", user=user, stats=stats, links=links_for(user, HOME_LINKS))
