"""What operators do to jobs (the pages, the API, the CLI, inside an app context): look one up,
cancel, retry, prune, count; and, at the embedded mode's start, send again what a stopped process left.

The ledger's rows are written by the middleware (edcrm.jobs.records); the operations here change them
through the app's session, each conditional on the state it expects, so that a cancel and a worker's
claim cannot both win.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import dramatiq
import sqlalchemy as sa
from dramatiq.common import current_millis

from ..extensions import db
from ..models.job import CANCELLABLE, PENDING, RETRYABLE, Job, JobError, JobState
from ..models.types import utcnow
from . import records, sending, subjects
from .broker import current_broker
from .errors import JobNotFound, JobStateConflict, RetryRefused

log = logging.getLogger(__name__)


def get(job_id: str) -> Job:
    job = db.session.get(Job, job_id)
    if job is None:
        raise JobNotFound(job_id)
    return job


def cancel(job_id: str) -> Job:
    """Cancel an enqueued or retrying job; its message is skipped when it comes up. The record it
    serves ends with it, in the same transaction (a recording upload: `cancelled`, its chunks kept)."""
    job = get(job_id)
    result: sa.CursorResult = db.session.execute(  # type: ignore[assignment]  # an UPDATE: a CursorResult
        sa.update(Job)
        .where(Job.id == job_id, Job.state.in_(CANCELLABLE))
        .values(state=JobState.CANCELLED, finished_at=utcnow(), scheduled_at=None)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount == 1:  # this cancel won: no attempt can start any more
        subjects.job_cancelled(job)
    db.session.commit()
    db.session.refresh(job)
    if result.rowcount != 1:
        raise JobStateConflict(job, "cancel", CANCELLABLE)
    return job


def retry(job_id: str, broker: dramatiq.Broker | None = None) -> Job:
    """Send a failed or cancelled job again, with the same id and arguments and a fresh retry budget.

    A new token makes any older message of the job (a cancelled one still waiting in the broker)
    skip itself, so the job runs once. RetryRefused if a retry could only end cancelled;
    BrokerUnavailable (the job put back as it was, to be retried later) if the broker refuses it.
    """
    job = get(job_id)
    if job.state in RETRYABLE and (reason := subjects.retry_refusal(job)):
        raise RetryRefused(job, reason)
    previous, token = job.state, records.new_token()
    result: sa.CursorResult = db.session.execute(  # type: ignore[assignment]  # an UPDATE: a CursorResult
        sa.update(Job)
        .where(Job.id == job_id, Job.state.in_(RETRYABLE))
        .values(state=JobState.ENQUEUED, token=token, retries=0, enqueued_at=utcnow(), finished_at=None)
        .execution_options(synchronize_session=False)
    )
    db.session.refresh(job)
    if result.rowcount != 1:
        db.session.commit()
        raise JobStateConflict(job, "retry", RETRYABLE)

    def put_back() -> None:
        """The broker is down: the job is as it was, so that it can be retried later."""
        db.session.execute(
            sa.update(Job)
            .where(Job.id == job_id, Job.token == token)
            .values(state=previous, finished_at=utcnow())
        )

    sending.deliver(
        message_of(job),
        undo=put_back,
        broker=broker,
        refusal="The job queue cannot be reached; the job was not retried.",
        refresh=[job],
    )
    return job


def resend_pending(broker: dramatiq.Broker | None = None) -> list[str]:
    """Send again every job a stopped process left enqueued, running or retrying.

    For the in-memory broker of the embedded mode only, whose messages die with the process; the
    tokens are kept, so each job still runs once.
    """
    jobs = db.session.execute(
        sa.select(Job).where(Job.state.in_(PENDING)).order_by(Job.enqueued_at)
    ).scalars()
    broker = broker or current_broker()
    sent = []
    for job in jobs:
        broker.enqueue(message_of(job), delay=_remaining_delay(job))
        sent.append(job.id)
    if sent:
        log.info("re-sent %d pending job(s) left by the previous run", len(sent))
    return sent


def _remaining_delay(job: Job) -> int | None:
    """A retrying job waits out what is left of its backoff."""
    if job.state is JobState.RETRYING and job.scheduled_at is not None:
        return max(0, int((job.scheduled_at - utcnow()).total_seconds() * 1000)) or None
    return None


def message_of(job: Job) -> dramatiq.Message:
    """The job's message as it is to be sent again: its id, arguments and options, its token."""
    return dramatiq.Message(
        queue_name=job.queue,
        actor_name=job.actor,
        args=tuple(job.args),
        kwargs=dict(job.kwargs),
        options={**job.options, records.TOKEN: job.token, "retries": job.retries},
        message_id=job.id,
        message_timestamp=current_millis(),
    )


def prune(*, retention_days: int, failed_retention_days: int, batch_size: int = 1000) -> int:
    """Delete finished jobs past their retention, in bounded batches; returns how many went.

    Succeeded and cancelled jobs are kept retention_days, failed ones failed_retention_days, so that
    failures stay inspectable long after they happened.
    """
    now = utcnow()
    rules = [
        ((JobState.SUCCEEDED, JobState.CANCELLED), now - timedelta(days=retention_days)),
        ((JobState.FAILED,), now - timedelta(days=failed_retention_days)),
    ]
    deleted = 0
    for states, cutoff in rules:
        while True:
            ids = (
                db.session.execute(
                    sa.select(Job.id).where(Job.state.in_(states), Job.finished_at < cutoff).limit(batch_size)
                )
                .scalars()
                .all()
            )
            if not ids:
                break
            db.session.execute(sa.delete(JobError).where(JobError.job_id.in_(ids)))
            db.session.execute(sa.delete(Job).where(Job.id.in_(ids)))
            db.session.commit()
            deleted += len(ids)
            if len(ids) < batch_size:
                break
    return deleted


def counts(*filters) -> dict[str, int]:
    """Jobs per state (every state present, zeros included) under the given filters."""
    rows = db.session.execute(sa.select(Job.state, sa.func.count()).where(*filters).group_by(Job.state))
    found = {state.value: n for state, n in rows}
    return {state.value: found.get(state.value, 0) for state in JobState}
