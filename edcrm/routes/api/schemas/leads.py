"""The bodies of leads and of the call logs telecallers record against them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, ConfigDict, Field

from ....models import CallOutcome, LeadStatus
from ....models.call_log import MAX_NOTES
from ..inputs import Choice, Integer, QueryModel, QueryText, RequestModel, Text, invalid
from ..pagination import DEFAULT_LIMIT, MAX_LIMIT, LeadCursor
from .base import Answer, NonNegative

#: A day: a longer call is a client's bug, and the column is a 32-bit integer on PostgreSQL.
MAX_CALL_SECONDS = 24 * 60 * 60


#: The longest search string taken (a name or a phone number is far shorter).
MAX_QUERY_LENGTH = 100

_Q = (
    "Search. A phone number or its start, in any writing (`98765`, `+9198765`, `098765`, `0091 98765`; "
    "spaces, dashes, dots and brackets are ignored): the leads whose number starts with it, digits "
    "without a country code being a national number of the default region (IN) or the start of an "
    "international one. Anything else: words, each the start of a word of the student's name, case "
    "aside (`anj men` finds Anjali Menon). Empty: no search."
)


class StrictRequestModel(RequestModel):
    """A JSON body whose unknown fields are a 422 (a misspelt field must not pass for an absent one)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class LeadQuery(QueryModel):
    limit: Annotated[int, Integer(1, MAX_LIMIT, query=True)] = DEFAULT_LIMIT
    cursor: LeadCursor | None = Field(None, description="The `next` of the previous page.")
    telecaller_id: Annotated[int, Integer(query=True)] | None = Field(
        None, description="Only the leads assigned to this telecaller."
    )
    import_id: Annotated[int, Integer(query=True)] | None = Field(
        None, description="Only the leads this import created."
    )
    status: Annotated[LeadStatus, Choice()] | None = Field(None, description="Only the leads in this status.")
    q: Annotated[str | None, QueryText(MAX_QUERY_LENGTH)] = Field(None, description=_Q)


class Lead(Answer):
    id: int
    student_name: str
    phone_number: str = Field(description="E.164", examples=["+919876543210"])
    email: str | None
    city: str | None
    status: LeadStatus
    telecaller_id: int | None
    import_id: int | None
    alternate_phone: str | None = Field(description="E.164")
    course: str | None
    university: str | None
    source: str | None
    created_at: datetime


class LeadUpdate(StrictRequestModel):
    """A change of a lead: its status (its telecaller or an admin of the branch), its telecaller (an admin
    of the branch: an active telecaller of the lead's branch)."""

    status: Annotated[LeadStatus, Choice()] | None = None
    telecaller_id: Annotated[int, Integer()] | None = Field(
        None, description="Reassign the lead (admins only: a telecaller sending it is 403)."
    )


class LeadPage(Answer):
    items: list[Lead]
    next: LeadCursor | None = Field(description="The cursor of the next page; null on the last.")


def _no_nul(text: str) -> str:
    # PostgreSQL's text cannot hold NUL: refused here, not a 500 there.
    if "\x00" in text:
        raise invalid("must not contain NUL characters")
    return text


class CallLogRequest(StrictRequestModel):
    lead_id: Annotated[int, Integer()]
    outcome: Annotated[CallOutcome, Choice()]
    duration_seconds: Annotated[int, Integer(0, MAX_CALL_SECONDS)] = Field(
        description="A whole number of seconds, at most a day."
    )
    notes: Annotated[str, Text(MAX_NOTES, required=False), AfterValidator(_no_nul)] | None = Field(
        None, description=f"What the telecaller wrote about the call, at most {MAX_NOTES:,} characters."
    )


class CallLogQuery(QueryModel):
    lead_id: Annotated[int, Integer(query=True)] | None = Field(
        None, description="Only the calls to this lead."
    )
    limit: Annotated[int, Integer(1, MAX_LIMIT, query=True)] = DEFAULT_LIMIT
    cursor: LeadCursor | None = Field(None, description="The `next` of the previous page.")


class Recording(Answer):
    id: int
    size: int
    content_type: str
    sha256: str = Field(pattern="^[0-9a-f]{64}$")
    duration_seconds: float | None
    download_url: str


class CallLog(Answer):
    id: int
    lead_id: int
    telecaller_id: int
    outcome: CallOutcome
    duration_seconds: NonNegative
    notes: str | None = None
    created_at: datetime | None = None
    recording: Recording | None


class CallLogPage(Answer):
    items: list[CallLog]
    next: LeadCursor | None = Field(description="The cursor of the next page; null on the last.")
