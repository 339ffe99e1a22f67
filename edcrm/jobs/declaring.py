"""Declaring actors: edcrm's `actor` decorator, and the actors it has declared.

Actors are module singletons (a module declares each once, when it is imported), while every app has a
broker of its own (edcrm.jobs.init_app). So every actor declared here is kept, and declare_all() moves
them all onto a new app's broker: the last app to configure the job system runs and sends them.

An actor is declared on the broker of the app that configured the job system last. One declared before
any app did (a test module's, as it is collected) goes on a broker of the embedded defaults that no app
owns, until an app's init_app moves it onto its own.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

import dramatiq
from flask import current_app, has_app_context

from .broker import build_broker
from .errors import Unrecoverable
from .middleware import DEFAULT_MAX_RETRIES, running_app

#: actor name -> actor, every actor declared with `actor`.
DECLARED: dict[str, dramatiq.Actor] = {}

_current: dramatiq.Broker | None = None
_configured_by_an_app = False
_lock = threading.Lock()


def _broker_to_declare_on() -> dramatiq.Broker:
    global _current
    with _lock:
        if _current is None:
            _current = build_broker({})  # in memory; owned by no app until declare_all() replaces it
        return _current


def is_configured() -> bool:
    """Whether an app has configured the job system of this process (declare_all has run)."""
    return _configured_by_an_app


def declare_all(broker: dramatiq.Broker) -> None:
    """Make broker the one every actor, declared so far or from now on, belongs to."""
    global _current, _configured_by_an_app
    with _lock:
        _current, _configured_by_an_app = broker, True
        for declared in DECLARED.values():
            declared.broker = broker
            broker.declare_actor(declared)


def _app_to_run_in():
    """The app of the worker running this message; called outside a worker, the current app."""
    app = running_app()
    if app is not None:
        return app
    if has_app_context():
        return current_app._get_current_object()  # type: ignore[attr-defined]
    raise RuntimeError("an edcrm actor runs in a worker of an app's broker, or inside an app context")


def actor(
    *,
    queue_name: str = "default",
    time_limit: int = 10 * 60 * 1000,
    actor_name: str | None = None,
    **options: Any,
) -> Callable[[Callable], dramatiq.Actor]:
    """Declare an edcrm actor: retried 3 times with the configured backoff, never retried on
    Unrecoverable, and run inside its broker's app context (a fresh database session per message).

    time_limit is in milliseconds; pick one that fits the work, large imports and recordings included.
    actor_name defaults to the function's name; a domain package that sends the actor by name owns it.
    `serves=KIND` (an option of the ledger middleware) names the kind of record the first argument is
    the id of (edcrm.jobs.subjects), so that the jobs pages can link a job to it.
    """

    def decorator(fn: Callable) -> dramatiq.Actor:
        @functools.wraps(fn)
        def run_in_app_context(*args, **kwargs):
            # Popped as the actor returns, before any middleware's after-hook: the session's
            # transaction ends before the ledger records the attempt (SQLite has one writer).
            with _app_to_run_in().app_context():
                return fn(*args, **kwargs)

        declared = dramatiq.actor(
            broker=_broker_to_declare_on(),
            actor_name=actor_name or fn.__name__,
            queue_name=queue_name,
            max_retries=DEFAULT_MAX_RETRIES,
            throws=(Unrecoverable,),
            time_limit=time_limit,
            **options,
        )(run_in_app_context)
        DECLARED[declared.actor_name] = declared
        return declared

    return decorator
