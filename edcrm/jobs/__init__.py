"""The job system: an app's broker, the ledger, the actor decorator, and sending jobs.

Each app configures its own (init_app): a broker built from its configuration, on which every edcrm
actor is declared, with the ledger middleware writing to its database. Workers, the scheduler and the
web process each run one such app: the web's create_app(), or the worker app that edcrm.actors makes
in a process that has none (`dramatiq edcrm.actors`, `periodiq edcrm.actors`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import dramatiq

from .broker import EXTENSION, broker_of, build_broker, current_broker
from .declaring import actor, declare_all, is_configured
from .errors import BrokerUnavailable, JobNotFound, JobStateConflict, RetryRefused, Unrecoverable
from .sending import new_job_id, send
from .subjects import Subject

if TYPE_CHECKING:
    from flask import Flask

__all__ = [
    "BrokerUnavailable",
    "JobNotFound",
    "JobStateConflict",
    "RetryRefused",
    "Subject",
    "Unrecoverable",
    "actor",
    "broker_of",
    "current_broker",
    "init_app",
    "is_configured",
    "last_error",
    "new_job_id",
    "send",
]


def init_app(app: Flask) -> None:
    """Give app a broker of its own, built from its configuration (nothing connects yet), declare every
    edcrm actor on it and make it Dramatiq's global broker (the `dramatiq` and `periodiq` CLIs'): the
    app's jobs run in it and write its ledger."""
    broker = build_broker(app.config, app)
    app.extensions[EXTENSION] = broker
    dramatiq.set_broker(broker)
    declare_all(broker)


def last_error(message: dict) -> str | None:
    """`ErrorType: message` of the last failed attempt of a message (as Dramatiq hands it to an
    `on_retry_exhausted` actor), from the traceback kept in its options: `psycopg.OperationalError: …`
    reads `OperationalError: …`."""
    lines = (message.get("options", {}).get("traceback") or "").strip().splitlines()
    if not lines:
        return None
    kind, separator, detail = lines[-1].partition(": ")
    return kind.rsplit(".", 1)[-1] + separator + detail
