"""The Dramatiq broker of an app, built from its configuration (edcrm.config) by edcrm.jobs.init_app.

REDIS_URL set: the Redis broker, for `dramatiq edcrm.actors` workers on any machine.
REDIS_URL unset: an in-memory broker (Dramatiq's StubBroker) whose workers run inside the web process
(see edcrm.jobs.embedded), which is also what the unit tests use.

Metrics: the Redis broker carries Dramatiq's Prometheus middleware (edcrm.jobs.prometheus), active in the
`dramatiq` CLI's worker processes only; the in-memory one carries edcrm.metrics.JobMetrics, whose figures
the web's /metrics shows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import AgeLimit, Callbacks, Pipelines, Retries, ShutdownNotifications, TimeLimit
from flask import current_app
from periodiq import PeriodiqMiddleware

from .middleware import DEFAULT_MAX_RETRIES, JobLedger
from .prometheus import WorkerPrometheus

if TYPE_CHECKING:
    from flask import Flask

#: Where init_app keeps the app's broker.
EXTENSION = "edcrm.jobs.broker"


class RedisBrokerPolling(RedisBroker):
    """Dramatiq's Redis broker, whose idle consumers look for new messages at least every idle_poll_ms.

    An idle Dramatiq consumer backs off between polls up to the worker's timeout (1 s, and the
    `dramatiq` command has no option for it): a recording whose last byte has just arrived would wait up
    to that long before its worker starts it. One poll is one small Lua call; ten a second per queue cost
    Redis nothing it notices."""

    def __init__(self, *args, idle_poll_ms: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.idle_poll_ms = idle_poll_ms

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000):
        return super().consume(queue_name, prefetch, min(timeout, self.idle_poll_ms))


def build_broker(config: Mapping, app: Flask | None = None) -> dramatiq.Broker:
    """A new broker for this configuration, with the ledger (writing to app's database) and edcrm's
    retry policy. Nothing connects here: the Redis client connects on first use."""
    middleware = [
        # First in the list: its before-hooks run first (a cancelled job is skipped before anything
        # else happens) and its after-hooks run last, once Retries has decided the message's fate.
        JobLedger(app),
        AgeLimit(),
        TimeLimit(),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        Retries(
            max_retries=DEFAULT_MAX_RETRIES,
            min_backoff=config.get("JOB_MIN_BACKOFF_MS", 15_000),
            max_backoff=config.get("JOB_MAX_BACKOFF_MS", 600_000),
        ),
        # Skips a periodic message that waited more than 5 minutes: the next tick will come.
        PeriodiqMiddleware(skip_delay=300),
    ]
    redis_url = config.get("REDIS_URL")
    if redis_url:
        # Last: its before-hooks run once nothing skipped the message, its after-hooks first.
        middleware.append(WorkerPrometheus())
        return RedisBrokerPolling(
            url=redis_url,
            idle_poll_ms=config.get("BROKER_IDLE_POLL_MS", 100),
            middleware=middleware,
            heartbeat_timeout=config.get("BROKER_HEARTBEAT_TIMEOUT_MS", 60_000),
            maintenance_chance=config.get("BROKER_MAINTENANCE_PER_MILLION", 1_000),
        )
    from ..metrics import JobMetrics  # imported here, a Redis worker's RSS stays 0.4 MB lower (measured)

    middleware.append(JobMetrics())
    return StubBroker(middleware=middleware)


def broker_of(app: Flask) -> dramatiq.Broker:
    """The broker edcrm.jobs.init_app built for app."""
    try:
        return app.extensions[EXTENSION]
    except KeyError:
        raise RuntimeError("the job system of this app is not configured (edcrm.jobs.init_app)") from None


def current_broker() -> dramatiq.Broker:
    """The broker of the current app."""
    return broker_of(current_app)


def is_in_memory(broker: dramatiq.Broker | None = None) -> bool:
    return isinstance(broker or current_broker(), StubBroker)


def ping(broker: dramatiq.Broker | None = None) -> None:
    """Raise if the broker (the current app's by default) cannot be reached."""
    broker = broker or current_broker()
    if isinstance(broker, RedisBroker):
        broker.client.ping()
