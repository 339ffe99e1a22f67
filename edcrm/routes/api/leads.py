"""GET /api/leads: the caller's leads (a telecaller's assigned ones, an admin's branch's), paginated."""

from __future__ import annotations

import sqlalchemy as sa
from flask import g, request

from ...auth import api_auth
from ...models import Lead
from ...permissions import visible_leads
from . import bp
from .inputs import Fields
from .pagination import page_params, paginate


@bp.get("/leads")
@api_auth()
def list_leads():
    fields = Fields(request.args, text=True)
    limit, after = page_params(fields)
    fields.check()
    leads, next_cursor = paginate(sa.select(Lead).where(visible_leads(g.user)), Lead.id, limit, after)
    return {"items": [lead.to_dict() for lead in leads], "next": next_cursor}
