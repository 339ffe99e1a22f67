"""Call logs: POST /api/call-logs (a telecaller logs a call to a lead of theirs, once per
`Idempotency-Key`), GET /api/call-logs (a page of them) and GET /api/call-logs/ID."""

from __future__ import annotations

import hashlib
import json as jsonlib
from typing import Any

import sqlalchemy as sa
from flask import g, request, url_for
from sqlalchemy.exc import IntegrityError

from ...auth import api_auth
from ...extensions import db
from ...models import CallLog, IdempotencyKey, Lead, Recording, Role
from ...models.idempotency import IDEMPOTENCY_KEY_HOURS, MAX_KEY_LENGTH
from ...permissions import call_log_for, lead_for, visible_call_logs
from ..errors import ApiError
from . import bp
from .inputs import validation_failed
from .pagination import paginate
from .schemas.base import Error
from .schemas.leads import CallLog as CallLogAnswer
from .schemas.leads import CallLogPage, CallLogQuery, CallLogRequest
from .serializers import call_log_json
from .spec import FORBIDDEN, JSON_BODY, NOT_FOUND, UNAUTHORIZED, VALIDATION_FAILED, operation
from .supplement import SUPPLEMENT

IDEMPOTENCY_HEADER = "Idempotency-Key"
#: Tells a client that the answer is the one its key got first, not a new call log.
REPLAYED_HEADER = "Idempotent-Replayed"

# What the document says of these operations beyond spectree (edcrm.routes.api.supplement is the tus
# work's): the key, the replay's header, the list's next page.
_CREATED = SUPPLEMENT["createCallLog"]["responses"]["201"]
SUPPLEMENT["createCallLog"] = {
    **SUPPLEMENT["createCallLog"],
    "parameters": [
        {
            "name": IDEMPOTENCY_HEADER,
            "in": "header",
            "required": False,
            "description": "Any string of 1 to 100 printable ASCII characters (a UUID): the same key from "
            "the same user within 24 hours answers the first answer again and logs nothing; with another "
            "body it is a 422 `idempotency_key_reused`. Only a 201 is remembered.",
            "schema": {"type": "string", "minLength": 1, "maxLength": 100, "pattern": "^[ -~]+$"},
        }
    ],
    "responses": {
        "201": {
            **_CREATED,
            "headers": {
                **_CREATED.get("headers", {}),
                REPLAYED_HEADER: {
                    "description": "`true` when the answer is the replay of an earlier request's.",
                    "schema": {"type": "string", "const": "true"},
                },
            },
        }
    },
}
SUPPLEMENT["listCallLogs"] = {
    "responses": {
        "200": {
            "links": {
                "nextPage": {"operationId": "listCallLogs", "parameters": {"cursor": "$response.body#/next"}}
            }
        }
    }
}


def _idempotency_key() -> str | None:
    """The request's Idempotency-Key (1..MAX_KEY_LENGTH visible ASCII characters), or None."""
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    if not 0 < len(key) <= MAX_KEY_LENGTH or not key.isascii() or not key.isprintable():
        message = f"must be 1 to {MAX_KEY_LENGTH} printable ASCII characters (a UUID, say)"
        raise validation_failed({IDEMPOTENCY_HEADER: message})
    return key


def _fingerprint(body: CallLogRequest) -> str:
    """What makes two requests the same: the route and the body's values (not its spacing or order)."""
    canonical = jsonlib.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return f"POST /api/call-logs {hashlib.sha256(canonical.encode()).hexdigest()}"


def _replay(key: str, fingerprint: str):
    """The first answer to this key, if the user sent it in the last IDEMPOTENCY_KEY_HOURS, else None."""
    remembered = IdempotencyKey.find(g.user.id, key)
    if remembered is None or remembered.status_code is None:
        return None
    if remembered.fingerprint != fingerprint:
        raise ApiError(
            422,
            "idempotency_key_reused",
            f"This Idempotency-Key was sent with another request in the last {IDEMPOTENCY_KEY_HOURS} "
            "hours; send a new key for a new request.",
        )
    return remembered.response, remembered.status_code, {**remembered.headers, REPLAYED_HEADER: "true"}


def _log(body: CallLogRequest) -> tuple[dict[str, Any], dict[str, str]]:
    """Add the call log (uncommitted): its answer and headers."""
    lead = lead_for(g.user, body.lead_id)
    call_log = CallLog(
        lead=lead,
        telecaller_id=g.user.id,
        outcome=body.outcome,
        duration_seconds=body.duration_seconds,
        notes=body.notes,
    )
    db.session.add(call_log)
    db.session.flush()
    location = url_for(".get_call_log", call_log_id=call_log.id)
    return call_log_json(call_log, recordings={}), {"Location": location}


@bp.post("/call-logs")
@api_auth(Role.TELECALLER)
@operation(
    "createCallLog",
    "call-logs",
    HTTP_201=(
        CallLogAnswer,
        "Logged; or, for an Idempotency-Key sent before, the first answer again (with "
        "`Idempotent-Replayed: true`), nothing new logged.",
    ),
    HTTP_401=UNAUTHORIZED,
    HTTP_403=FORBIDDEN,
    HTTP_404=NOT_FOUND,
    HTTP_409=(
        Error,
        "A request with the same Idempotency-Key was being answered and ended without an answer to "
        "replay (`idempotency_key_in_use`): send it again.",
    ),
    **{
        **JSON_BODY,
        "HTTP_422": (
            Error,
            "Invalid fields or an unknown field (`validation_failed`, with `fields`), an Idempotency-Key "
            "that is not 1..100 printable ASCII characters (the same, naming `Idempotency-Key`), or a key "
            "sent before with another body (`idempotency_key_reused`).",
        ),
    },
)
def create_call_log(json: CallLogRequest):
    """Log a call to one of the telecaller's leads (telecallers only); safe to retry with Idempotency-Key"""
    key = _idempotency_key()
    if key is None:
        answer, headers = _log(json)
        db.session.commit()
        return answer, 201, headers
    fingerprint = _fingerprint(json)
    replayed = _replay(key, fingerprint)
    if replayed is not None:
        return replayed
    # Insert first: a concurrent request with the same key waits here on the unique constraint until
    # this transaction ends, then replays its answer (or, if it rolled back, does the work itself).
    IdempotencyKey.forget_expired(g.user.id, key)
    remembered = IdempotencyKey(user_id=g.user.id, key=key, fingerprint=fingerprint, headers={})
    db.session.add(remembered)
    try:
        db.session.flush()
    except IntegrityError:
        db.session.rollback()
        replayed = _replay(key, fingerprint)
        if replayed is not None:
            return replayed
        message = "A request with this Idempotency-Key ended meanwhile; send it again."
        raise ApiError(409, "idempotency_key_in_use", message) from None
    try:
        answer, headers = _log(json)
    except Exception:
        db.session.rollback()  # a refused request spends no key: its row goes with it
        raise
    remembered.status_code, remembered.response, remembered.headers = 201, answer, headers
    db.session.commit()
    return answer, 201, headers


def _latest_recordings(call_log_ids: list[int]) -> dict[int, Recording]:
    """The latest recording of each of these call logs, in one query."""
    if not call_log_ids:
        return {}
    latest = (
        sa.select(sa.func.max(Recording.id))
        .where(Recording.call_log_id.in_(call_log_ids))
        .group_by(Recording.call_log_id)
    )
    recordings = db.session.execute(sa.select(Recording).where(Recording.id.in_(latest))).scalars()
    return {recording.call_log_id: recording for recording in recordings}


@bp.get("/call-logs")
@api_auth()
@operation(
    "listCallLogs",
    "call-logs",
    HTTP_200=(CallLogPage, "One page of call logs, by id."),
    HTTP_401=UNAUTHORIZED,
    HTTP_422=VALIDATION_FAILED,
)
def list_call_logs(query: CallLogQuery):
    """The caller's call logs (a telecaller's own, an admin's branch's), a page at a time"""
    after = query.cursor.after() if query.cursor else None
    stmt = sa.select(CallLog).join(Lead, CallLog.lead_id == Lead.id).where(visible_call_logs(g.user))
    if query.lead_id is not None:
        stmt = stmt.where(CallLog.lead_id == query.lead_id)
    call_logs, next_cursor = paginate(stmt, CallLog.id, query.limit, after)
    recordings = _latest_recordings([call_log.id for call_log in call_logs])
    return {"items": [call_log_json(call_log, recordings) for call_log in call_logs], "next": next_cursor}


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
