"""The ledger's records: what the ledger middleware (edcrm.jobs.middleware) writes for each message.

Every write is a short transaction of its own on the ledger's engine (never the caller's session, so
an actor's rollback cannot undo its ledger row), and is conditional on the state it expects and on the
message's token, so a late or duplicate write never moves a job backwards:

    enqueued ──claim──▶ running ──▶ succeeded
        ▲                  │ ├────▶ failed      (retries exhausted)
        │                  │ └────▶ cancelled   (Unrecoverable)
        │    retrying ◀────┘ (the retry is enqueued: before it can be claimed)
        │       │
        └───────┴── cancel (operator) ──▶ cancelled ── retry (operator) ──▶ enqueued (new token)

What operators do to a job (cancel, retry, prune…) is edcrm.jobs.ledger.
"""

from __future__ import annotations

import threading
import traceback
import uuid
import weakref
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import dramatiq
import sqlalchemy as sa
from dramatiq.common import q_name
from sqlalchemy.engine import Engine

from ..extensions import db
from ..models.job import RUNNABLE, Job, JobError, JobState
from ..models.types import utcnow

if TYPE_CHECKING:
    from flask import Flask

_engine_lock = threading.Lock()

#: A message, as sent or as a worker holds it.
Delivery = dramatiq.Message | dramatiq.MessageProxy

#: Message options that describe one delivery, not the job: never stored, never re-sent.
_VOLATILE_OPTIONS = {"eta", "redis_message_id", "retries", "traceback", "requeue_timestamp", "ledger_token"}
TOKEN = "ledger_token"
#: The message option naming the branch a job serves (set by edcrm.jobs.send); kept across retries.
BRANCH = "branch_id"
#: The message option naming the record a job serves, `[kind, id]` (set by edcrm.jobs.send, or by the
#: middleware from the actor's `serves` option); kept across retries and handed to callbacks.
SUBJECT = "subject"
_jobs = Job.__table__
_errors = JobError.__table__


def new_token() -> str:
    return uuid.uuid4().hex


def _build_enqueue(dialect: str):
    columns: tuple[str, ...] = ("id", "actor", "queue", "args", "kwargs", "options", "token", "max_retries")
    columns += ("enqueued_at", "scheduled_at", "branch_id", "serves_kind", "serves_id")
    values: dict[str, Any] = {name: _param(f"b_{name}", _jobs.c[name]) for name in columns}
    values |= {"state": JobState.ENQUEUED.value, "attempts": 0, "retries": 0}
    # Only the dialect in use is imported: sqlite's would cost every PostgreSQL process 0.7 MB.
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(_jobs).values(values).on_conflict_do_nothing(index_elements=["id"])
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(_jobs).values(values).on_conflict_do_nothing(index_elements=["id"])


def _inherited(message: Delivery, option: str):
    """A message's own option, or, for an `on_retry_exhausted` callback (whose first argument is the
    message it is about), that message's."""
    value = message.options.get(option)
    if value is None and message.args and isinstance(message.args[0], dict):
        value = (message.args[0].get("options") or {}).get(option)
    return value


def _is_id(value) -> bool:
    return isinstance(value, int | str) and not isinstance(value, bool)


def branch_of(message: Delivery) -> int | None:
    """The branch a message's job serves (its callbacks serve it too)."""
    branch = _inherited(message, BRANCH)
    return branch if isinstance(branch, int) and not isinstance(branch, bool) else None


def subject_of(message: Delivery, serves: str | None = None) -> tuple[str, int | str] | None:
    """(kind, id) of the record a message's job serves: its SUBJECT option (a callback's is the one of
    the message it is about), or else, for an actor declared with `serves=kind`, its first argument."""
    subject = _inherited(message, SUBJECT)
    if isinstance(subject, list | tuple) and len(subject) == 2:
        kind, record_id = subject
        return (kind, record_id) if isinstance(kind, str) and _is_id(record_id) else None
    if serves is not None and message.args and _is_id(message.args[0]):
        return serves, message.args[0]
    return None


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


def _execute(engine: Engine, statement, params: dict | None = None) -> sa.Result:
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


def record_enqueued(engine: Engine, message: Delivery, *, max_retries: int, delay_ms: int | None) -> None:
    """A first send: the row exists, `enqueued`, before the message can reach any worker."""
    subject = subject_of(message)
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
        "b_serves_kind": subject[0] if subject else None,
        "b_serves_id": subject[1] if subject else None,
    }
    _execute(engine, statement, params)


def record_retry_scheduled(engine: Engine, message: Delivery, *, attempt: int, delay_ms: int | None) -> None:
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


def claim(engine: Engine, message: Delivery, *, max_retries: int) -> int | None:
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
    message: Delivery,
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
