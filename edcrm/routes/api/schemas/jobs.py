"""The bodies of the job records: their filters, the records themselves and a retry's report."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from ....models import JobState
from ..inputs import Choice, Integer, QueryModel, QueryText, RequestModel, Text
from ..pagination import DEFAULT_LIMIT, MAX_LIMIT, JobCursor
from .base import Answer, NonNegative


class JobQuery(QueryModel):
    state: Annotated[JobState, Choice()] | None = None
    queue: Annotated[str | None, QueryText(120)] = Field(
        None, description="Only this queue's jobs (empty: any queue)."
    )
    actor: Annotated[str | None, QueryText(120)] = Field(
        None, description="Only this actor's jobs (empty: any actor)."
    )
    limit: Annotated[int, Integer(1, MAX_LIMIT, query=True)] = DEFAULT_LIMIT
    cursor: JobCursor | None = Field(None, description="The `next` of the previous page.")


class RetryFilter(RequestModel):
    """Which failed jobs to retry; an empty body or `{}`: all of them."""

    body_optional: ClassVar[bool] = True

    queue: Annotated[str, Text(120, required=False)] | None = Field(
        None, description="Only this queue's jobs."
    )
    actor: Annotated[str, Text(120, required=False)] | None = Field(
        None, description="Only this actor's jobs."
    )


class JobError(Answer):
    attempt: int
    at: datetime
    error: str = Field(description="`ErrorType: message`.")
    traceback: str | None = None


class JobSubject(Answer):
    kind: Literal["import", "recording_upload"]
    id: int | str
    url: str


# pydantic's mypy plugin gives extra="allow" models an __init__(**kwargs), which clashes with the field.
class Job(Answer):  # type: ignore[no-redef]
    id: str = Field(description="The Dramatiq message id.")
    actor: str
    queue: str
    args: list[Any]
    kwargs: dict[str, Any] = Field(default_factory=dict)
    state: JobState
    attempts: NonNegative
    max_retries: NonNegative
    branch_id: int | None = Field(None, description="The branch served; null for a system job.")
    errors: list[JobError]
    enqueued_at: datetime
    scheduled_at: datetime | None = None
    started_at: datetime | None
    finished_at: datetime | None
    url: str | None = None
    subject: JobSubject | None = Field(None, description="The import or recording upload the job works on.")


class JobList(Answer):
    items: list[Job]
    counts: dict[str, NonNegative] = Field(
        description="Jobs per state (every state), under the queue and actor filters."
    )
    queues: dict[str, NonNegative] = Field(
        default_factory=dict, description="Jobs per queue, under the state and actor filters."
    )
    next: JobCursor | None = Field(description="The cursor of the next (older) page; null on the last.")


class RetryReport(Answer):
    retried: int
    job_ids: list[str]
    remaining: int = Field(description="Failed jobs left for another call.")
