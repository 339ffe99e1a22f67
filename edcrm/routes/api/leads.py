"""The leads of the mobile app: the list (filters, search, pages), one lead, and its update (a status by
its telecaller or an admin of the branch; a reassignment by that admin)."""

from __future__ import annotations

import re
from typing import Any

import phonenumbers
import sqlalchemy as sa
from flask import g
from flask.blueprints import BlueprintSetupState
from werkzeug.exceptions import Forbidden

from ...auth import api_auth
from ...extensions import db
from ...imports.validation import DEFAULT_REGION
from ...models import Lead
from ...models.types import utcnow
from ...permissions import assignable_telecaller, lead_for, may_reassign, visible_leads
from ..converters import StrictIntegerConverter
from . import bp
from .document import PATH_PARAMETERS
from .inputs import validation_failed
from .pagination import paginate
from .schemas.base import Error
from .schemas.leads import Lead as LeadAnswer
from .schemas.leads import LeadPage, LeadQuery, LeadUpdate
from .serializers import lead_json
from .spec import FORBIDDEN, JSON_BODY, NOT_FOUND, UNAUTHORIZED, VALIDATION_FAILED, operation

# The document's description of the path parameter (edcrm.routes.api.document is the tus work's).
PATH_PARAMETERS["lead_id"] = PATH_PARAMETERS["call_log_id"]


class LeadIdConverter(StrictIntegerConverter):
    """A lead id in a path: 1..MAX_ID in the pattern itself. GET and PATCH share the path, and werkzeug
    answers a request whose method one rule lacks as 405 before it converts the id; with the range in
    the pattern, `PATCH /api/leads/2147483648` matches no rule and is a 404 as an unknown id should be.
    (The same in edcrm.routes.converters' `int` would do it for every route.)"""

    regex = (
        "(?:[1-9][0-9]{0,8}|1[0-9]{9}|20[0-9]{8}|21[0-3][0-9]{7}|214[0-6][0-9]{6}|2147[0-3][0-9]{5}"
        "|21474[0-7][0-9]{4}|214748[0-2][0-9]{3}|2147483[0-5][0-9]{2}|21474836[0-3][0-9]|214748364[0-7])"
    )


@bp.record_once
def _install_converter(state: BlueprintSetupState) -> None:
    # Before the rules below are added (a blueprint adds them in order): they look the converter up then.
    state.app.url_map.converters.setdefault("lead_id", LeadIdConverter)


#: What a phone number is written with: digits, a leading +, and separators people type.
_PHONE_QUERY = re.compile(r"\+?[0-9 ()\-./]+")
_NOT_DIGITS = re.compile(r"[^0-9]")
#: A name's words: runs of letters and digits (what PostgreSQL's parser makes words of too).
_WORD = re.compile(r"[^\W_]+")
#: On SQLite, what may come before a word of a name.
_WORD_STARTS = (" ", "-", ".", "'")

_COUNTRY_CODE = str(phonenumbers.country_code_for_region(DEFAULT_REGION))


def phone_prefixes(query: str) -> list[str] | None:
    """The E.164 prefixes a phone-like query stands for, or None if it is not one.

    Numbers are stored in E.164 (+919876543210), people type them as they dial: `+9198765` and
    `009198765` are international; `098765` is national with its trunk 0; bare digits (`98765`,
    `9198765`) may be either, so both are searched.
    """
    query = query.strip()
    if not _PHONE_QUERY.fullmatch(query):
        return None
    digits = _NOT_DIGITS.sub("", query)
    if not digits:
        return None
    if query.startswith("+"):
        return [f"+{digits}"]
    if digits.startswith("00"):
        return [f"+{digits[2:]}"]
    if digits.startswith("0"):
        return [f"+{_COUNTRY_CODE}{digits.lstrip('0')}"]
    return [f"+{digits}", f"+{_COUNTRY_CODE}{digits}"]


def _starts_with(column, prefix: str) -> sa.ColumnElement[bool]:
    # The prefixes are made of + and digits only: nothing to escape, and a constant-prefix LIKE that the
    # varchar_pattern_ops index answers on PostgreSQL.
    return column.like(f"{prefix}%")


def name_words(query: str) -> list[str]:
    """The words of a name query, lowercased."""
    return [word.lower() for word in _WORD.findall(query)]


def _name_matches(words: list[str]) -> sa.ColumnElement[bool]:
    if not words:
        return sa.false()
    if db.session.get_bind().dialect.name == "postgresql":
        # Each word a prefix of a word of the name ('anj:*' & 'men:*'): the words are letters and digits
        # only, so they cannot be read as tsquery operators. The index is on this very expression.
        tsquery = " & ".join(f"{word}:*" for word in words)
        vector = sa.func.to_tsvector(sa.literal_column("'simple'"), Lead.student_name)
        return vector.op("@@")(sa.func.to_tsquery(sa.literal_column("'simple'"), tsquery))
    return sa.and_(
        *(
            sa.or_(
                Lead.student_name.ilike(f"{word}%"),
                *(Lead.student_name.ilike(f"%{start}{word}%") for start in _WORD_STARTS),
            )
            for word in words
        )
    )


def search(query: str) -> sa.ColumnElement[bool]:
    """The leads a search string finds: by phone prefix if it looks like a number, else by name."""
    prefixes = phone_prefixes(query)
    if prefixes is not None:
        return sa.or_(*(_starts_with(Lead.phone_number, prefix) for prefix in prefixes))
    return _name_matches(name_words(query))


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
    """The caller's leads, by id, a page at a time, filtered and searched"""
    after = query.cursor.after() if query.cursor else None
    stmt = sa.select(Lead).where(visible_leads(g.user))
    if query.telecaller_id is not None:
        stmt = stmt.where(Lead.telecaller_id == query.telecaller_id)
    if query.import_id is not None:
        stmt = stmt.where(Lead.import_id == query.import_id)
    if query.status is not None:
        stmt = stmt.where(Lead.status == query.status)
    if query.q is not None and query.q.strip():
        stmt = stmt.where(search(query.q))
    # Keyset pages by id under the same filters: a lead added or changed meanwhile is neither repeated
    # nor makes another skipped.
    leads, next_cursor = paginate(stmt, Lead.id, query.limit, after)
    return {"items": [lead_json(lead) for lead in leads], "next": next_cursor}


_ONE_LEAD: dict[str, Any] = {"HTTP_401": UNAUTHORIZED, "HTTP_403": FORBIDDEN, "HTTP_404": NOT_FOUND}


@bp.get("/leads/<lead_id:lead_id>")
@api_auth()
@operation("getLead", "leads", HTTP_200=(LeadAnswer, "The lead."), **_ONE_LEAD)
def get_lead(lead_id: int):
    """A lead (its telecaller, or an admin of its branch)"""
    return lead_json(lead_for(g.user, lead_id))


@bp.patch("/leads/<lead_id:lead_id>")
@api_auth()
@operation(
    "updateLead",
    "leads",
    HTTP_200=(LeadAnswer, "The lead, changed."),
    **{
        **_ONE_LEAD,
        **JSON_BODY,
        "HTTP_403": (
            Error,
            "Not your lead, or a telecaller sending `telecaller_id` (only an admin reassigns) (`forbidden`).",
        ),
        "HTTP_422": (
            Error,
            "Invalid fields, an unknown field, or a `telecaller_id` that is not an active telecaller of the "
            "lead's branch (`validation_failed`, with `fields`).",
        ),
    },
)
def update_lead(lead_id: int, json: LeadUpdate):
    """Change a lead's status, or (admins) give it to another telecaller; `{}` changes nothing"""
    lead = lead_for(g.user, lead_id)
    if json.telecaller_id is not None:
        if not may_reassign(g.user, lead):
            raise Forbidden("Only an admin of the branch can give a lead to another telecaller.")
        telecaller = assignable_telecaller(lead, json.telecaller_id)
        if telecaller is None:
            raise validation_failed({"telecaller_id": "is not an active telecaller of this branch"})
        if lead.telecaller_id != telecaller.id:
            lead.telecaller_id, lead.assigned_at = telecaller.id, utcnow()
    if json.status is not None:
        lead.status = json.status
    db.session.commit()
    return lead_json(lead)
