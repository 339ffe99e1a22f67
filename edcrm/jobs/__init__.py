"""The job system: broker set-up, the ledger, the actor decorator and the app that jobs run in.

Workers, the scheduler and the web process all reach the database through one Flask app per process:
the one create_app() bound here, or, in a process that never called it (`dramatiq edcrm.actors`,
`periodiq edcrm.actors`), one made from the environment on first need.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import dramatiq

from .broker import DEFAULT_MAX_RETRIES, get_broker
from .subjects import SERVES

if TYPE_CHECKING:
    from flask import Flask

_app: Flask | None = None
_app_lock = threading.Lock()


class Unrecoverable(Exception):
    """A job cannot succeed however often it is tried (its import, call log or file is gone).

    Raised by an actor, it ends the job `cancelled` at once, with no retry.
    """


def last_error(message: dict) -> str | None:
    """`ErrorType: message` of the last failed attempt of a message (as Dramatiq hands it to an
    `on_retry_exhausted` actor), from the traceback kept in its options: `psycopg.OperationalError: …`
    reads `OperationalError: …`."""
    lines = (message.get("options", {}).get("traceback") or "").strip().splitlines()
    if not lines:
        return None
    kind, separator, detail = lines[-1].partition(": ")
    return kind.rsplit(".", 1)[-1] + separator + detail


def init_app(app: Flask) -> None:
    """Make app the one that jobs of this process run in and write the ledger through."""
    global _app
    _app = app


def job_app() -> Flask:
    """The Flask app of this process's jobs, created from the environment if none was bound."""
    if _app is None:
        with _app_lock:
            if _app is None:
                from .. import create_app

                create_app(web=False)  # binds itself through init_app(); no pages or API here
    assert _app is not None
    return _app


def actor(
    *,
    queue_name: str = "default",
    time_limit: int = 10 * 60 * 1000,
    serves: str | None = None,
    **options: Any,
) -> Callable[[Callable], dramatiq.Actor]:
    """Declare an edcrm actor: retried 3 times with the configured backoff, never retried on
    Unrecoverable, and run inside its own Flask app context (a fresh database session per message).

    time_limit is in milliseconds; pick one that fits the work, large imports and recordings included.
    serves names the kind of record the first argument is the id of (edcrm.jobs.subjects), so that the
    jobs pages can link a job to it.
    """

    def decorator(fn: Callable) -> dramatiq.Actor:
        if serves is not None:
            SERVES[fn.__name__] = serves

        @functools.wraps(fn)
        def run_in_app_context(*args, **kwargs):
            with job_app().app_context():
                return fn(*args, **kwargs)

        return dramatiq.actor(
            run_in_app_context,
            broker=get_broker(),  # configures the broker first, whoever imports an actor module first
            actor_name=fn.__name__,
            queue_name=queue_name,
            max_retries=DEFAULT_MAX_RETRIES,
            throws=(Unrecoverable,),
            time_limit=time_limit,
            **options,
        )

    return decorator
