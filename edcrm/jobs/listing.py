"""Finding jobs for operators: filters, newest-first pages, counts per state and per queue, and
"retry all failed" over a filter. Plain queries, shared by the jobs pages, the API and the CLI.

Every query starts from a scope (who is asking: edcrm.permissions.visible_jobs) so that an admin never
sees, counts or retries another branch's jobs.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from datetime import datetime

import dramatiq
import sqlalchemy as sa
from sqlalchemy.orm import selectinload

from ..extensions import db
from ..models import Job, JobState
from . import ledger
from .errors import JobNotFound, JobStateConflict

#: How many failed jobs one "retry all failed" sends at most; the rest wait for the next press.
RETRY_ALL_LIMIT = 1000


@dataclasses.dataclass(frozen=True)
class JobFilter:
    """What an operator narrowed the list to, within scope (a WHERE clause)."""

    scope: sa.ColumnElement[bool]
    state: JobState | None = None
    queue: str | None = None
    actor: str | None = None

    def clauses(self, *, state: bool = True, queue: bool = True) -> list[sa.ColumnElement[bool]]:
        """The WHERE clauses; state=False or queue=False leaves that filter out (for its own counts)."""
        where = [self.scope]
        if state and self.state is not None:
            where.append(Job.state == self.state)
        if queue and self.queue is not None:
            where.append(Job.queue == self.queue)
        if self.actor is not None:
            where.append(Job.actor == self.actor)
        return where


@dataclasses.dataclass(frozen=True)
class Position:
    """Where a page ended: the list is ordered by (enqueued_at, id), newest first."""

    enqueued_at: datetime
    job_id: str

    def encode(self) -> str:
        raw = json.dumps({"t": self.enqueued_at.isoformat(), "id": self.job_id}, separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, cursor: str) -> Position | None:
        """The position a cursor names, or None if it is not one of ours."""
        try:
            data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
            at, job_id = datetime.fromisoformat(data["t"]), data["id"]
        except (binascii.Error, ValueError, TypeError, KeyError):
            return None
        if at.tzinfo is None or not isinstance(job_id, str) or len(job_id) > 64:
            return None
        return cls(at, job_id)


def page(
    where: JobFilter, limit: int, after: Position | None = None, *, with_errors: bool = False
) -> tuple[list[Job], Position | None]:
    """Up to limit jobs, newest first, after the given position; and the position of the next page
    (None on the last one). Keyset pagination: no job is skipped or shown twice as jobs are added."""
    stmt = sa.select(Job).where(*where.clauses())
    if after is not None:
        stmt = stmt.where(
            sa.or_(
                Job.enqueued_at < after.enqueued_at,
                sa.and_(Job.enqueued_at == after.enqueued_at, Job.id < after.job_id),
            )
        )
    if with_errors:
        stmt = stmt.options(selectinload(Job.errors))
    stmt = stmt.order_by(Job.enqueued_at.desc(), Job.id.desc()).limit(limit + 1)
    jobs = list(db.session.execute(stmt).scalars())
    if len(jobs) <= limit:
        return jobs, None
    jobs = jobs[:limit]
    return jobs, Position(jobs[-1].enqueued_at, jobs[-1].id)


def counts_by_state(where: JobFilter) -> dict[str, int]:
    """Jobs per state (every state, zeros included) under the filter's other choices."""
    return ledger.counts(*where.clauses(state=False))


def counts_by_queue(where: JobFilter) -> dict[str, int]:
    """Jobs per queue that has any, under the filter's other choices."""
    rows = db.session.execute(
        sa.select(Job.queue, sa.func.count())
        .where(*where.clauses(queue=False))
        .group_by(Job.queue)
        .order_by(Job.queue)
    )
    return dict(rows.all())


def actor_names(scope: sa.ColumnElement[bool]) -> list[str]:
    """The actors of the jobs in scope, for a filter's choices."""
    rows = db.session.execute(sa.select(Job.actor).where(scope).group_by(Job.actor).order_by(Job.actor))
    return list(rows.scalars())


@dataclasses.dataclass
class RetryReport:
    retried: list[str]
    remaining: int  # failed jobs of the filter left for another press (beyond RETRY_ALL_LIMIT)


def retry_failed(where: JobFilter, broker: dramatiq.Broker | None = None) -> RetryReport:
    """Retry the failed jobs of the filter (whatever its state choice), oldest first, at most
    RETRY_ALL_LIMIT of them. A job that someone else retried meanwhile is passed over; a broker that
    cannot be reached stops the run (ledger.retry puts that job back as it was) and raises."""
    failed = dataclasses.replace(where, state=JobState.FAILED)
    ids = list(
        db.session.execute(
            sa.select(Job.id)
            .where(*failed.clauses())
            .order_by(Job.enqueued_at, Job.id)
            .limit(RETRY_ALL_LIMIT + 1)
        ).scalars()
    )
    retried = []
    for job_id in ids[:RETRY_ALL_LIMIT]:
        try:
            ledger.retry(job_id, broker)
        except (JobNotFound, JobStateConflict):
            continue  # pruned or retried by someone else since the ids were read
        retried.append(job_id)
    remaining = 0
    if len(ids) > RETRY_ALL_LIMIT:
        remaining = db.session.execute(
            sa.select(sa.func.count()).select_from(Job).where(*failed.clauses())
        ).scalar_one()
    return RetryReport(retried, remaining)
