"""Sending a job: after the caller's transaction commits, and undone if the broker refuses it.

The caller's record names the job (an import's or an upload's `job_id`) and is committed before the
message is sent, so a worker always finds it. If the broker then refuses the message, nothing is left
behind: the ledger row its middleware wrote goes, the caller's `undo` runs and commits, and
BrokerUnavailable says so (the API answers 503). Domain packages send actors by name, on the current
app's broker, so they never import the actors (edcrm.actors sits above them).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import dramatiq
import sqlalchemy as sa
from dramatiq.message import generate_unique_id

from ..extensions import db
from ..models.job import Job, JobState
from . import records
from .broker import current_broker
from .errors import BrokerUnavailable
from .subjects import Subject

log = logging.getLogger(__name__)

#: BrokerUnavailable's message unless the caller says otherwise.
REFUSED = "The job queue cannot be reached; the job was not sent."


def new_job_id() -> str:
    """An id for a job not sent yet, for the record that names it (send's job_id)."""
    return generate_unique_id()


def send(
    actor: str | dramatiq.Actor,
    *args,
    branch_id: int | None = None,
    serves: Subject | None = None,
    job_id: str | None = None,
    undo: Callable[[], None] | None = None,
    refresh: Iterable[object] = (),
) -> str:
    """Commit the current transaction, then send actor(*args) on the app's broker; the job's id.

    branch_id files the job under a branch (its admins see it); serves names the record the job works
    on, when the actor's `serves` option and first argument do not. job_id is the id the caller's
    record already holds (new_job_id()); refresh, the records the caller reads afterwards, reloaded
    after the commit and before the job can change them. If the broker refuses the message: undo (the
    caller's changes to take back, in the session) runs and commits with the ledger row's removal,
    then BrokerUnavailable.
    """
    broker = current_broker()
    declared = broker.get_actor(actor if isinstance(actor, str) else actor.actor_name)
    options: dict = {}
    if branch_id is not None:
        options[records.BRANCH] = branch_id
    if serves is not None:
        options[records.SUBJECT] = [serves.kind, serves.id]
    message = declared.message_with_options(args=args, **options)
    if job_id is not None:
        message = message.copy(message_id=job_id)
    deliver(message, undo=undo, broker=broker, refresh=refresh)
    return message.message_id


def deliver(
    message: dramatiq.Message,
    *,
    undo: Callable[[], None] | None = None,
    broker: dramatiq.Broker | None = None,
    refusal: str = REFUSED,
    refresh: Iterable[object] = (),
) -> None:
    """Commit the current transaction, then enqueue message (see send). A message that carries a
    ledger token is a re-send of a job whose row stays; a refused first send's row is removed."""
    broker = broker or current_broker()
    first_send, refresh = records.TOKEN not in message.options, list(refresh)
    db.session.commit()
    for record in refresh:
        db.session.refresh(record)
    try:
        broker.enqueue(message)
    except Exception as error:
        log.exception("could not send job %s (%s)", message.message_id, message.actor_name)
        if first_send:
            _forget_unsent(message.message_id)
        if undo is not None:
            undo()
        db.session.commit()
        for record in refresh:
            db.session.refresh(record)
        raise BrokerUnavailable(refusal) from error


def _forget_unsent(job_id: str) -> None:
    """The row before_enqueue wrote goes, unless an attempt has already claimed it (the send went
    through after all), so the ledger lists no job that will never run."""
    db.session.execute(
        sa.delete(Job)
        .where(Job.id == job_id, Job.state == JobState.ENQUEUED, Job.attempts == 0)
        .execution_options(synchronize_session=False)
    )
