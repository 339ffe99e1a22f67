"""The job ledger: every state change of a job, and what operators may do to one.

The ledger middleware writes through the `record_*` and `claim` functions, each a short transaction of
its own on the engine (never the caller's session, so an actor's rollback cannot undo its ledger row).
Every write is conditional on the state it expects and on the message's token, so a late or duplicate
write never moves a job backwards:

    enqueued ──claim──▶ running ──▶ succeeded
        ▲                  │ ├────▶ failed      (retries exhausted)
        │                  │ └────▶ cancelled   (Unrecoverable)
        │    retrying ◀────┘ (the retry is enqueued: before it can be claimed)
        │       │
        └───────┴── cancel (operator) ──▶ cancelled ── retry (operator) ──▶ enqueued (new token)
"""

from __future__ import annotations

import logging
import threading
import traceback
import uuid
import weakref
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import dramatiq
import sqlalchemy as sa
from dramatiq.common import current_millis, q_name
from sqlalchemy.engine import Engine

from ..extensions import db
from ..models.job import CANCELLABLE, PENDING, RETRYABLE, RUNNABLE, Job, JobError, JobState
from ..models.types import utcnow
from . import subjects

if TYPE_CHECKING:
    from flask import Flask

log = logging.getLogger(__name__)
_engine_lock = threading.Lock()

#: Message options that describe one delivery, not the job: never stored, never re-sent.
_VOLATILE_OPTIONS = {"eta", "redis_message_id", "retries", "traceback", "requeue_timestamp", "ledger_token"}
TOKEN = "ledger_token"
#: The message option naming the branch a job serves (sent by edcrm.jobs.send); kept across retries.
BRANCH = "branch_id"
_jobs = Job.__table__
_errors = JobError.__table__


class JobNotFound(LookupError):
    pass


class BrokerUnavailable(Exception):
    """The job could not be sent: the broker is unreachable. The job is left as it was."""


class JobStateConflict(Exception):
    """The job is not in a state that allows the operation (e.g. cancelling a running job)."""

    def __init__(self, job: Job, operation: str, allowed: Iterable[JobState]):
        self.job = job
        names = ", ".join(state.value for state in allowed)
        super().__init__(f"cannot {operation} a {job.state.value} job (only {names})")


class RetryRefused(JobStateConflict):
    """The job is failed or cancelled, but a retry could only end cancelled: what it works on is gone
    or can never be worked on again (edcrm.jobs.subjects). `reason` says why, in plain words."""

    def __init__(self, job: Job, reason: str):
        self.job, self.reason = job, reason
        Exception.__init__(self, reason)


def new_token() -> str:
    return uuid.uuid4().hex


def _build_enqueue(dialect: str):
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    columns = ("id", "actor", "queue", "args", "kwargs", "options", "token", "max_retries")
    columns += ("enqueued_at", "scheduled_at", "branch_id")
    return (
        insert(_jobs)
        .values(
            {name: _param(f"b_{name}", _jobs.c[name]) for name in columns}
            | {"state": JobState.ENQUEUED.value, "attempts": 0, "retries": 0}
        )
        .on_conflict_do_nothing(index_elements=["id"])
    )


def branch_of(message: dramatiq.Message) -> int | None:
    """The branch a message's job serves: its own option, or, for an `on_retry_exhausted` callback
    (whose first argument is the message it is about), that message's."""
    branch = message.options.get(BRANCH)
    if branch is None and message.args and isinstance(message.args[0], dict):
        branch = (message.args[0].get("options") or {}).get(BRANCH)
    return branch if isinstance(branch, int) and not isinstance(branch, bool) else None


def _after(delay_ms: int | None) -> datetime | None:
    return utcnow() + timedelta(milliseconds=delay_ms) if delay_ms else None


def _states(*states: JobState) -> list:
    # Literal values, not an expanding IN: the statement compiles once and is cached as it is.
    return [sa.literal_column(f"'{state.value}'") for state in states]


def _param(name: str, column: sa.Column) -> sa.BindParameter:
    return sa.bindparam(name, type_=column.type)


# The middleware's statements, built once: they run two or three times per message, so their
# construction and compilation must not (SQLAlchemy caches the compiled form of each).
# The token is compared with IS NOT DISTINCT FROM: a row without one matches a message without one.
_owned_by_attempt = (
    _jobs.c.id == _param("b_id", _jobs.c.id),
    _jobs.c.token.is_not_distinct_from(_param("b_token", _jobs.c.token)),
    _jobs.c.state == sa.literal_column(f"'{JobState.RUNNING.value}'"),
    _jobs.c.attempts == _param("b_attempt", _jobs.c.attempts),
)
_SCHEDULE_RETRY = (
    _jobs.update()
    .where(*_owned_by_attempt)
    .values(
        state=JobState.RETRYING.value,
        retries=_param("b_retries", _jobs.c.retries),
        scheduled_at=_param("b_scheduled_at", _jobs.c.scheduled_at),
    )
)
_CLAIM = (
    _jobs.update()
    .where(
        _jobs.c.id == _param("b_id", _jobs.c.id),
        _jobs.c.token.is_not_distinct_from(_param("b_token", _jobs.c.token)),
        _jobs.c.state.in_(_states(*RUNNABLE)),
    )
    .values(
        state=JobState.RUNNING.value,
        attempts=_jobs.c.attempts + 1,
        retries=_param("b_retries", _jobs.c.retries),
        started_at=_param("b_now", _jobs.c.started_at),
        scheduled_at=None,
    )
    .returning(_jobs.c.attempts)
)
_EXISTS = sa.select(_jobs.c.id).where(_jobs.c.id == _param("b_id", _jobs.c.id))
#: The first-send INSERT ... ON CONFLICT DO NOTHING, per dialect.
_ENQUEUE: dict[str, sa.Insert] = {}
_FINISH = (
    _jobs.update()
    .where(*_owned_by_attempt)
    .values(state=_param("b_state", _jobs.c.state), finished_at=_param("b_now", _jobs.c.finished_at))
)


def engine_for(app: Flask) -> Engine:
    """The ledger's own engine on app's database: autocommit, so that each write is one round trip
    (no BEGIN, no COMMIT), and no pre-ping on checkout (see _execute). Created once per app."""
    engine = app.extensions.get("edcrm_ledger_engine")
    if engine is None:
        with _engine_lock:
            engine = app.extensions.get("edcrm_ledger_engine")
            if engine is None:
                with app.app_context():
                    main = db.engine
                if main.url.get_backend_name() == "sqlite" and main.url.database in (None, "", ":memory:"):
                    engine = main  # an in-memory database exists only in its own engine's connection
                else:
                    engine = sa.create_engine(
                        main.url,
                        isolation_level="AUTOCOMMIT",
                        pool_size=10,  # a worker process's threads, each holding at most one
                        max_overflow=20,
                        pool_recycle=1800,
                    )
                    # Closed with its app (tests make many), not left to the garbage collector.
                    weakref.finalize(app, engine.dispose)
                app.extensions["edcrm_ledger_engine"] = engine
    return engine


def dispose_engine(app: Flask) -> None:
    engine = app.extensions.pop("edcrm_ledger_engine", None)
    if engine is not None:
        engine.dispose()


def _execute(engine: Engine, statement, params: dict | None = None) -> sa.CursorResult:
    """Run one statement in a transaction of its own (on the autocommit ledger engine: one round trip).

    The ledger engine skips the pool's pre-ping (a round trip per checkout); a connection that went
    stale meanwhile (a database restart) is invalidated by its first failure and the statement tried
    once more on a fresh one. Every statement here is safe to repeat.
    """
    for attempt in (1, 2):
        try:
            with engine.begin() as conn:
                result = conn.execute(statement, params)
                return result.freeze()() if result.returns_rows else result
        except sa.exc.DBAPIError as exc:
            if attempt == 2 or not exc.connection_invalidated:
                raise
    raise AssertionError("unreachable")


# -- written by the middleware ------------------------------------------------------------------------


def record_enqueued(
    engine: Engine, message: dramatiq.Message, *, max_retries: int, delay_ms: int | None
) -> None:
    """A first send: the row exists, `enqueued`, before the message can reach any worker."""
    statement = _ENQUEUE.get(engine.dialect.name)
    if statement is None:
        statement = _ENQUEUE[engine.dialect.name] = _build_enqueue(engine.dialect.name)
    params = {
        "b_id": message.message_id,
        "b_actor": message.actor_name,
        "b_queue": q_name(message.queue_name),
        "b_args": list(message.args),
        "b_kwargs": dict(message.kwargs),
        "b_options": {k: v for k, v in message.options.items() if k not in _VOLATILE_OPTIONS},
        "b_token": message.options.get(TOKEN),
        "b_max_retries": max_retries,
        "b_enqueued_at": utcnow(),
        "b_scheduled_at": _after(delay_ms),
        "b_branch_id": branch_of(message),
    }
    _execute(engine, statement, params)


def record_retry_scheduled(
    engine: Engine, message: dramatiq.Message, *, attempt: int, delay_ms: int | None
) -> None:
    """Retries is re-enqueuing the failed attempt: `retrying`, written before the retry can be claimed."""
    _execute(
        engine,
        _SCHEDULE_RETRY,
        {
            "b_id": message.message_id,
            "b_token": message.options.get(TOKEN),
            "b_attempt": attempt,
            "b_retries": message.options.get("retries", 0),
            "b_scheduled_at": _after(delay_ms),
        },
    )


def claim(engine: Engine, message: dramatiq.Message, *, max_retries: int) -> int | None:
    """Start an attempt: the attempt's number, or None when the message must be skipped.

    Skipped: the job was cancelled, is already finished (a duplicate delivery), or was re-sent by hand
    since this message was (its token is stale). A `running` job is claimed again: that is a
    redelivery after its worker died.
    """
    params = {
        "b_id": message.message_id,
        "b_token": message.options.get(TOKEN),
        "b_retries": message.options.get("retries", 0),
        "b_now": utcnow(),
    }
    attempt = _execute(engine, _CLAIM, params).scalar_one_or_none()
    if attempt is not None or _execute(engine, _EXISTS, params).first() is not None:
        return attempt
    # No row: a message from a producer without the ledger. Record it, then claim it like any other.
    record_enqueued(engine, message, max_retries=max_retries, delay_ms=None)
    return _execute(engine, _CLAIM, params).scalar_one_or_none()


def record_finished(
    engine: Engine,
    message: dramatiq.Message,
    *,
    attempt: int,
    state: JobState,
    exception: BaseException | None = None,
    error: str | None = None,
) -> None:
    """The attempt ended: its error (if any) is appended; a final state is set if the attempt still owns
    the job (a redelivered copy that started meanwhile does not lose its `running`)."""
    finish = None
    if state is not JobState.RETRYING:  # a retry's state was written by record_retry_scheduled
        params = {
            "b_id": message.message_id,
            "b_token": message.options.get(TOKEN),
            "b_attempt": attempt,
            "b_state": state.value,
            "b_now": utcnow(),
        }
        finish = (_FINISH, params)
    if exception is None and error is None:
        if finish:
            _execute(engine, *finish)
        return
    error_row = _errors.insert().values(
        job_id=message.message_id,
        attempt=attempt,
        at=utcnow(),
        error=error or f"{type(exception).__name__}: {exception}",
        traceback="".join(traceback.format_exception(exception)) if exception is not None else None,
    )
    with engine.connect() as conn:
        # The error and the state together, or neither: a real transaction, even on the ledger engine.
        conn.execution_options(isolation_level=conn.default_isolation_level)
        with conn.begin():
            conn.execute(error_row)
            if finish:
                conn.execute(*finish)


# -- used by operators: pages, API, CLI (inside an app context) -----------------------------------------


def get(job_id: str) -> Job:
    job = db.session.get(Job, job_id)
    if job is None:
        raise JobNotFound(job_id)
    return job


def cancel(job_id: str) -> Job:
    """Cancel an enqueued or retrying job; its message is skipped when it comes up. The record it
    serves ends with it, in the same transaction (a recording upload: `cancelled`, its chunks kept)."""
    job = get(job_id)
    result = db.session.execute(
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
    skip itself, so the job runs once. RetryRefused if a retry could only end cancelled.
    """
    job = get(job_id)
    if job.state in RETRYABLE and (reason := subjects.retry_refusal(job)):
        raise RetryRefused(job, reason)
    previous, token = job.state, new_token()
    result = db.session.execute(
        sa.update(Job)
        .where(Job.id == job_id, Job.state.in_(RETRYABLE))
        .values(state=JobState.ENQUEUED, token=token, retries=0, enqueued_at=utcnow(), finished_at=None)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    db.session.refresh(job)
    if result.rowcount != 1:
        raise JobStateConflict(job, "retry", RETRYABLE)
    try:
        _send(job, broker)
    except Exception as error:
        # The broker is down: put the job back as it was, so that it can be retried later.
        log.exception("could not send job %s again", job_id)
        db.session.execute(
            sa.update(Job)
            .where(Job.id == job_id, Job.token == token)
            .values(state=previous, finished_at=utcnow())
        )
        db.session.commit()
        db.session.refresh(job)
        raise BrokerUnavailable("The job queue cannot be reached; the job was not retried.") from error
    return job


def forget_unsent(job_id: str) -> None:
    """The broker refused a first send: the row before_enqueue wrote goes, unless an attempt has already
    claimed it (the send went through after all), so the ledger lists no job that will never run."""
    db.session.execute(
        sa.delete(Job)
        .where(Job.id == job_id, Job.state == JobState.ENQUEUED, Job.attempts == 0)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()


def resend_pending(broker: dramatiq.Broker | None = None) -> list[str]:
    """Send again every job a stopped process left enqueued, running or retrying.

    For the in-memory broker of the embedded mode only, whose messages die with the process; the
    tokens are kept, so each job still runs once.
    """
    jobs = db.session.execute(
        sa.select(Job).where(Job.state.in_(PENDING)).order_by(Job.enqueued_at)
    ).scalars()
    sent = []
    for job in jobs:
        _send(job, broker)
        sent.append(job.id)
    if sent:
        log.info("re-sent %d pending job(s) left by the previous run", len(sent))
    return sent


def _send(job: Job, broker: dramatiq.Broker | None) -> None:
    from .broker import get_broker

    delay = None
    if job.state is JobState.RETRYING and job.scheduled_at is not None:
        delay = max(0, int((job.scheduled_at - utcnow()).total_seconds() * 1000)) or None
    message = dramatiq.Message(
        queue_name=job.queue,
        actor_name=job.actor,
        args=tuple(job.args),
        kwargs=dict(job.kwargs),
        options={**job.options, TOKEN: job.token, "retries": job.retries},
        message_id=job.id,
        message_timestamp=current_millis(),
    )
    (broker or get_broker()).enqueue(message, delay=delay)


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
