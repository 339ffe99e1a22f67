"""POST /api/call-logs (a telecaller logs a call to a lead of theirs) and GET /api/call-logs/ID."""

from __future__ import annotations

from flask import g, url_for

from ...auth import api_auth
from ...extensions import db
from ...models import CallLog, Role
from ...permissions import call_log_for, lead_for
from . import bp
from .schemas.leads import CallLog as CallLogAnswer
from .schemas.leads import CallLogRequest
from .serializers import call_log_json
from .spec import FORBIDDEN, JSON_BODY, NOT_FOUND, UNAUTHORIZED, operation


@bp.post("/call-logs")
@api_auth(Role.TELECALLER)
@operation(
    "createCallLog",
    "call-logs",
    HTTP_201=(CallLogAnswer, "Logged."),
    HTTP_401=UNAUTHORIZED,
    HTTP_403=FORBIDDEN,
    HTTP_404=NOT_FOUND,
    **JSON_BODY,
)
def create_call_log(json: CallLogRequest):
    """Log a call to one of the telecaller's leads (telecallers only)"""
    lead = lead_for(g.user, json.lead_id)
    call_log = CallLog(
        lead=lead, telecaller_id=g.user.id, outcome=json.outcome, duration_seconds=json.duration_seconds
    )
    db.session.add(call_log)
    db.session.commit()
    location = url_for(".get_call_log", call_log_id=call_log.id)
    return call_log_json(call_log), 201, {"Location": location}


@bp.get("/call-logs/<int:call_log_id>")
@api_auth()
@operation(
    "getCallLog",
    "call-logs",
    HTTP_200=(CallLogAnswer, "The call log."),
    HTTP_401=UNAUTHORIZED,
    HTTP_403=FORBIDDEN,
    HTTP_404=NOT_FOUND,
)
def get_call_log(call_log_id: int):
    """A call log (the telecaller who logged it, or an admin of its branch)"""
    return call_log_json(call_log_for(g.user, call_log_id))
