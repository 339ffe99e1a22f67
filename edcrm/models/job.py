"""The job ledger: one row per Dramatiq message, this project's `oban_jobs`.

Rows are written by the ledger middleware (edcrm.jobs.middleware, through edcrm.jobs.records) and
changed by operators through edcrm.jobs.ledger; nothing else writes them.
"""

from __future__ import annotations

import enum
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import Model
from .types import JSONType, UTCDateTime, str_enum, utcnow


class JobState(enum.StrEnum):
    ENQUEUED = "enqueued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: States from which a worker may (re)start the job's message.
RUNNABLE = (JobState.ENQUEUED, JobState.RETRYING, JobState.RUNNING)
#: States an operator may cancel from, and retry from.
CANCELLABLE = (JobState.ENQUEUED, JobState.RETRYING)
RETRYABLE = (JobState.FAILED, JobState.CANCELLED)
#: States that survive a restart of the embedded mode's in-memory broker only if re-sent.
PENDING = (JobState.ENQUEUED, JobState.RUNNING, JobState.RETRYING)
#: States a job ends in (until an operator retries it).
FINAL = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class Job(Model):
    __tablename__ = "jobs"
    __table_args__ = (
        sa.Index("ix_jobs_state_finished_at", "state", "finished_at"),
        sa.Index("ix_jobs_enqueued_at", "enqueued_at"),
        sa.Index("ix_jobs_queue_state", "queue", "state"),
        sa.Index("ix_jobs_branch_id_enqueued_at", "branch_id", "enqueued_at"),
    )

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)  # the Dramatiq message id
    actor: Mapped[str] = mapped_column(sa.String(120), index=True)
    queue: Mapped[str] = mapped_column(sa.String(120))
    args: Mapped[list] = mapped_column(JSONType, default=list)
    kwargs: Mapped[dict] = mapped_column(JSONType, default=dict)
    # The message's options, so the job can be sent again exactly as it was (retry, restart).
    options: Mapped[dict] = mapped_column(JSONType, default=dict)
    state: Mapped[JobState] = mapped_column(str_enum(JobState, "job_state"))
    # Changes whenever the job is (re)sent by hand; a message carrying an older token is skipped.
    token: Mapped[str | None] = mapped_column(sa.String(32))
    attempts: Mapped[int] = mapped_column(default=0)
    # Dramatiq's retry count of the message now in the broker: 0 after a (re)send, n after the n-th retry.
    retries: Mapped[int] = mapped_column(default=0)
    max_retries: Mapped[int] = mapped_column(default=3)
    # The branch whose import or recording the job serves; None for a system job (a pruner, a ping).
    # An admin sees their branch's jobs and the system ones (edcrm.permissions.visible_jobs).
    branch_id: Mapped[int | None] = mapped_column(sa.ForeignKey("branches.id", ondelete="CASCADE"))
    # The record the job works on (edcrm.jobs.subjects), written when it is first sent: its kind, and
    # its id as sent (JSON keeps an import's integer and an upload's string apart).
    serves_kind: Mapped[str | None] = mapped_column(sa.String(40))
    serves_id: Mapped[int | str | None] = mapped_column(JSONType)
    enqueued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    scheduled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    # By attempt: a retry may fail and be recorded before the attempt it retries has written its error.
    errors: Mapped[list[JobError]] = relationship(
        order_by="(JobError.attempt, JobError.id)", cascade="all, delete-orphan", passive_deletes=True
    )


class JobError(Model):
    """One failed attempt of a job: append-only, so concurrent attempts never lose one."""

    __tablename__ = "job_errors"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[str] = mapped_column(sa.ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int]
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    error: Mapped[str] = mapped_column(sa.Text)
    traceback: Mapped[str | None] = mapped_column(sa.Text)
