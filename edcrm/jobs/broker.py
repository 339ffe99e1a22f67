"""The Dramatiq broker, configured once per process from the environment before any actor exists.

REDIS_URL set: the Redis broker, for `dramatiq edcrm.actors` workers on any machine.
REDIS_URL unset: an in-memory broker (Dramatiq's StubBroker) whose workers run inside the web process
(see edcrm.jobs.embedded), which is also what the unit tests use.

Metrics: the Redis broker carries Dramatiq's Prometheus middleware (edcrm.jobs.prometheus), active in the
`dramatiq` CLI's worker processes only; the in-memory one carries edcrm.metrics.JobMetrics, whose figures
the web's /metrics shows.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import AgeLimit, Callbacks, Pipelines, Retries, ShutdownNotifications, TimeLimit
from periodiq import PeriodiqMiddleware

from ..config import env_int

DEFAULT_MAX_RETRIES = 3

_broker: dramatiq.Broker | None = None
_lock = threading.Lock()


def build_broker(env: Mapping[str, str]) -> dramatiq.Broker:
    """A new broker for this environment, with the ledger and edcrm's retry policy."""
    from .middleware import JobLedger

    min_backoff = env_int(env, "JOB_MIN_BACKOFF_MS", 15_000, minimum=1)
    max_backoff = env_int(env, "JOB_MAX_BACKOFF_MS", 600_000, minimum=1)
    middleware = [
        # First in the list: its before-hooks run first (a cancelled job is skipped before anything
        # else happens) and its after-hooks run last, once Retries has decided the message's fate.
        JobLedger(),
        AgeLimit(),
        TimeLimit(),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        Retries(max_retries=DEFAULT_MAX_RETRIES, min_backoff=min_backoff, max_backoff=max_backoff),
        # Skips a periodic message that waited more than 5 minutes: the next tick will come.
        PeriodiqMiddleware(skip_delay=300),
    ]
    redis_url = env.get("REDIS_URL")
    if redis_url:
        from .prometheus import WorkerPrometheus

        # Last: its before-hooks run once nothing skipped the message, its after-hooks first.
        middleware.append(WorkerPrometheus())

        # The client connects on first use, not here: nothing connects at import time.
        # A worker that dies (SIGKILL, a lost machine) leaves its unacked messages to be redelivered
        # once its heartbeat is older than the timeout, by the maintenance that a random share of
        # broker commands (per million) runs. Dramatiq's defaults: 60 s and 1,000 per million.
        return RedisBroker(
            url=redis_url,
            middleware=middleware,
            heartbeat_timeout=env_int(env, "BROKER_HEARTBEAT_TIMEOUT_MS", 60_000, minimum=1),
            maintenance_chance=env_int(env, "BROKER_MAINTENANCE_PER_MILLION", 1_000, minimum=0),
        )
    from ..metrics import JobMetrics

    middleware.append(JobMetrics())
    return StubBroker(middleware=middleware)


def get_broker() -> dramatiq.Broker:
    """The process's broker, built from os.environ on first call and made Dramatiq's global one."""
    global _broker
    if _broker is None:
        with _lock:
            if _broker is None:
                broker = build_broker(os.environ)
                dramatiq.set_broker(broker)
                _broker = broker
    return _broker


def is_in_memory(broker: dramatiq.Broker | None = None) -> bool:
    return isinstance(broker or get_broker(), StubBroker)


def ping(broker: dramatiq.Broker | None = None) -> None:
    """Raise if the broker cannot be reached."""
    broker = broker or get_broker()
    if isinstance(broker, RedisBroker):
        broker.client.ping()
