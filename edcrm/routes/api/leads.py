"""GET /api/leads: the caller's leads (a telecaller's assigned ones, an admin's branch's), paginated."""

from __future__ import annotations

import sqlalchemy as sa
from flask import g

from ...auth import api_auth
from ...models import Lead
from ...permissions import visible_leads
from . import bp
from .pagination import paginate
from .schemas.leads import LeadPage, LeadQuery
from .serializers import lead_json
from .spec import UNAUTHORIZED, VALIDATION_FAILED, operation


@bp.get("/leads")
@api_auth()
@operation(
    "listLeads",
    "leads",
    HTTP_200=(LeadPage, "One page of leads."),
    HTTP_401=UNAUTHORIZED,
    HTTP_422=VALIDATION_FAILED,
)
def list_leads(query: LeadQuery):
    """The caller's leads, by id, a page at a time"""
    after = query.cursor.after() if query.cursor else None
    stmt = sa.select(Lead).where(visible_leads(g.user))
    leads, next_cursor = paginate(stmt, Lead.id, query.limit, after)
    return {"items": [lead_json(lead) for lead in leads], "next": next_cursor}
