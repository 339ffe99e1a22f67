"""JobLedger: the Dramatiq middleware that keeps one ledger row per message (see edcrm.jobs.ledger).

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

import dramatiq
from dramatiq.middleware import Middleware, MiddlewareError, SkipMessage
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from ..models.job import JobState
from . import ledger
from .broker import DEFAULT_MAX_RETRIES


class LedgerUnavailable(MiddlewareError):
    """The database refused the claim of a message: the message is retried, not run."""


class JobLedger(Middleware):
    def __init__(self) -> None:
        # message id -> attempt number, for the messages this worker thread is processing
        self._local = threading.local()
        self._bound: tuple[object, Engine] | None = None

    @property
    def _claims(self) -> dict[str, int]:
        if not hasattr(self._local, "claims"):
            self._local.claims = {}
        return self._local.claims

    def _engine(self) -> Engine:
        """The ledger engine of the app jobs run in (looked up once per app: this is on every message's
        path)."""
        from . import job_app

        app, bound = job_app(), self._bound
        if bound is None or bound[0] is not app:
            bound = self._bound = (app, ledger.engine_for(app))
        return bound[1]

    @staticmethod
    def _max_retries(broker: dramatiq.Broker, message: dramatiq.Message) -> int:
        options = broker.get_actor(message.actor_name).options
        return message.options.get("max_retries", options.get("max_retries", DEFAULT_MAX_RETRIES))

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        self._engine()  # a worker with a broken configuration fails at boot, not at its first message

    def before_enqueue(self, broker: dramatiq.Broker, message: dramatiq.Message, delay: int | None) -> None:
        attempt = self._claims.get(message.message_id)
        if attempt is not None:
            # Retries is re-enqueuing the message this thread is processing.
            ledger.record_retry_scheduled(self._engine(), message, attempt=attempt, delay_ms=delay)
        elif ledger.TOKEN not in message.options:
            # A first send. (A message that carries a token is a re-send by the ledger itself.)
            message.options[ledger.TOKEN] = ledger.new_token()
            max_retries = self._max_retries(broker, message)
            ledger.record_enqueued(self._engine(), message, max_retries=max_retries, delay_ms=delay)

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        try:
            attempt = ledger.claim(self._engine(), message, max_retries=self._max_retries(broker, message))
        except SQLAlchemyError as exc:
            # Unclaimed, the job would run unrecorded, and every actor needs the database anyway: fail
            # this delivery instead, and Retries sends the message again after its backoff.
            raise LedgerUnavailable(f"the job ledger cannot be written: {exc}") from exc
        if attempt is None:
            raise SkipMessage(f"job {message.message_id} is cancelled, finished or superseded")
        self._claims[message.message_id] = attempt

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.MessageProxy,
        *,
        result=None,
        exception: BaseException | None = None,
    ) -> None:
        attempt = self._claims.pop(message.message_id, None)
        if attempt is None:
            return
        if exception is None:
            state = JobState.SUCCEEDED
        else:
            from . import Unrecoverable

            if isinstance(exception, Unrecoverable):
                state = JobState.CANCELLED
            elif message.failed:
                state = JobState.FAILED
            else:
                state = JobState.RETRYING
        ledger.record_finished(self._engine(), message, attempt=attempt, state=state, exception=exception)

    def after_skip_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        # Skipped by another middleware after this one claimed it (a periodic run that came too late,
        # a message past its age limit): it will not run, so say so.
        attempt = self._claims.pop(message.message_id, None)
        if attempt is None:
            return
        state = JobState.FAILED if message.failed else JobState.CANCELLED
        ledger.record_finished(
            self._engine(),
            message,
            attempt=attempt,
            state=state,
            error="Skipped: the message came too late to run",
        )
