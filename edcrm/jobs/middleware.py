"""JobLedger: the Dramatiq middleware that keeps one ledger row per message (see edcrm.jobs.records).

Each broker's JobLedger belongs to the app that built the broker (edcrm.jobs.init_app): it writes that
app's ledger, and names that app as the one its worker threads run messages in (running_app()). It
accepts one actor option, `serves`: the kind of record (edcrm.jobs.subjects) whose id the actor's
first argument is; what a job serves is stored on its row when it is first sent.

Hook choices, and the traps they avoid:
- The row is written in before_enqueue, never after_enqueue: after_enqueue can run after a worker has
  already started the message, and a late "enqueued" would move the job backwards.
- on_failure-style hooks fire on every failed attempt. The failure is classified here, in
  after_process_message, which runs after Retries (this middleware is first in the broker's list, and
  after-hooks run in reverse): `message.failed` then says whether this was the last attempt.
- A retry's `retrying` state is written when Retries re-enqueues the message (before_enqueue inside the
  claiming thread), so it lands before the retry can be claimed, however short the backoff.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import dramatiq
from dramatiq.middleware import Middleware, MiddlewareError, SkipMessage
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from ..models.job import JobState
from . import records
from .errors import Unrecoverable

if TYPE_CHECKING:
    from flask import Flask

DEFAULT_MAX_RETRIES = 3

#: The app whose broker's worker runs the message of this thread (edcrm.jobs.declaring's actors run in it).
_running = threading.local()


def running_app() -> Flask | None:
    """The app of the message this worker thread is running, if it runs one."""
    return getattr(_running, "app", None)


class LedgerUnavailable(MiddlewareError):
    """The database refused the claim of a message: the message is retried, not run."""


class JobLedger(Middleware):
    #: `serves=KIND`: the actor's first argument is the id of a record of that kind.
    actor_options = {"serves"}

    def __init__(self, app: Flask | None) -> None:
        self.app = app
        # message id -> attempt number, for the messages this worker thread is processing
        self._local = threading.local()
        self._engine_of_app: Engine | None = None

    @property
    def _claims(self) -> dict[str, int]:
        if not hasattr(self._local, "claims"):
            self._local.claims = {}
        return self._local.claims

    def _engine(self) -> Engine:
        """The ledger engine of the app (looked up once: this is on every message's path)."""
        if self._engine_of_app is None:
            if self.app is None:
                raise RuntimeError("no app has configured the job system (edcrm.jobs.init_app)")
            self._engine_of_app = records.engine_for(self.app)
        return self._engine_of_app

    @staticmethod
    def _options(broker: dramatiq.Broker, message: records.Delivery) -> dict:
        return broker.get_actor(message.actor_name).options

    def _max_retries(self, broker: dramatiq.Broker, message: records.Delivery) -> int:
        default = self._options(broker, message).get("max_retries", DEFAULT_MAX_RETRIES)
        return message.options.get("max_retries", default)

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        self._engine()  # a worker with a broken configuration fails at boot, not at its first message

    def before_enqueue(self, broker: dramatiq.Broker, message: dramatiq.Message, delay: int | None) -> None:
        attempt = self._claims.get(message.message_id)
        if attempt is not None:
            # Retries is re-enqueuing the message this thread is processing.
            records.record_retry_scheduled(self._engine(), message, attempt=attempt, delay_ms=delay)
        elif records.TOKEN not in message.options:
            # A first send. (A message that carries a token is a re-send by the ledger itself.)
            message.options[records.TOKEN] = records.new_token()
            subject = records.subject_of(message, self._options(broker, message).get("serves"))
            if subject is not None:
                message.options[records.SUBJECT] = list(subject)  # its retries and callbacks serve it too
            max_retries = self._max_retries(broker, message)
            records.record_enqueued(self._engine(), message, max_retries=max_retries, delay_ms=delay)

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        try:
            attempt = records.claim(self._engine(), message, max_retries=self._max_retries(broker, message))
        except SQLAlchemyError as exc:
            # Unclaimed, the job would run unrecorded, and every actor needs the database anyway: fail
            # this delivery instead, and Retries sends the message again after its backoff.
            raise LedgerUnavailable(f"the job ledger cannot be written: {exc}") from exc
        if attempt is None:
            raise SkipMessage(f"job {message.message_id} is cancelled, finished or superseded")
        self._claims[message.message_id] = attempt
        _running.app = self.app

    def _release(self, message: dramatiq.MessageProxy) -> int | None:
        """The attempt this thread claimed for message; None if it claimed none."""
        _running.app = None
        return self._claims.pop(message.message_id, None)

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.MessageProxy,
        *,
        result=None,
        exception: BaseException | None = None,
    ) -> None:
        attempt = self._release(message)
        if attempt is None:
            return
        if exception is None:
            state = JobState.SUCCEEDED
        elif isinstance(exception, Unrecoverable):
            state = JobState.CANCELLED
        elif message.failed:
            state = JobState.FAILED
        else:
            state = JobState.RETRYING
        records.record_finished(self._engine(), message, attempt=attempt, state=state, exception=exception)

    def after_skip_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        # Skipped by another middleware after this one claimed it (a periodic run that came too late,
        # a message past its age limit): it will not run, so say so.
        attempt = self._release(message)
        if attempt is None:
            return
        state = JobState.FAILED if message.failed else JobState.CANCELLED
        records.record_finished(
            self._engine(),
            message,
            attempt=attempt,
            state=state,
            error="Skipped: the message came too late to run",
        )
