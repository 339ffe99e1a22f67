"""The bodies of leads and of the call logs telecallers record against them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field

from ....models import CallOutcome, LeadStatus
from ..inputs import Choice, Integer, QueryModel, RequestModel
from ..pagination import DEFAULT_LIMIT, MAX_LIMIT, LeadCursor
from .base import Answer, NonNegative

#: A day: a longer call is a client's bug, and the column is a 32-bit integer on PostgreSQL.
MAX_CALL_SECONDS = 24 * 60 * 60


class LeadQuery(QueryModel):
    limit: Annotated[int, Integer(1, MAX_LIMIT, query=True)] = DEFAULT_LIMIT
    cursor: LeadCursor | None = Field(None, description="The `next` of the previous page.")


class Lead(Answer):
    id: int
    student_name: str
    phone_number: str = Field(description="E.164", examples=["+919876543210"])
    email: str | None
    city: str | None
    status: LeadStatus
    telecaller_id: int | None
    import_id: int | None


class LeadPage(Answer):
    items: list[Lead]
    next: LeadCursor | None = Field(description="The cursor of the next page; null on the last.")


class CallLogRequest(RequestModel):
    lead_id: Annotated[int, Integer()]
    outcome: Annotated[CallOutcome, Choice()]
    duration_seconds: Annotated[int, Integer(0, MAX_CALL_SECONDS)] = Field(
        description="A whole number of seconds, at most a day."
    )


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
    created_at: datetime | None = None
    recording: Recording | None
