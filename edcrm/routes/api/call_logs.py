"""POST /api/call-logs (a telecaller logs a call to a lead of theirs) and GET /api/call-logs/ID."""

from __future__ import annotations

from flask import g, url_for

from ...auth import api_auth
from ...extensions import db
from ...models import CallLog, CallOutcome, Role
from ...permissions import call_log_for, lead_for
from . import bp
from .inputs import Fields, json_object

#: A day: a longer call is a client's bug, and the column is a 32-bit integer on PostgreSQL.
MAX_CALL_SECONDS = 24 * 60 * 60


@bp.post("/call-logs")
@api_auth(Role.TELECALLER)
def create_call_log():
    fields = Fields(json_object())
    lead_id = fields.integer("lead_id", minimum=1)
    outcome = fields.choice("outcome", CallOutcome)
    duration = fields.integer("duration_seconds", minimum=0, maximum=MAX_CALL_SECONDS)
    fields.check()
    lead = lead_for(g.user, lead_id)
    call_log = CallLog(lead=lead, telecaller_id=g.user.id, outcome=outcome, duration_seconds=duration)
    db.session.add(call_log)
    db.session.commit()
    location = url_for(".get_call_log", call_log_id=call_log.id)
    return call_log.to_dict(), 201, {"Location": location}


@bp.get("/call-logs/<int:call_log_id>")
@api_auth()
def get_call_log(call_log_id: int):
    return call_log_for(g.user, call_log_id).to_dict()
