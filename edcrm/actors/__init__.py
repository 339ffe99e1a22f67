"""The actors; `dramatiq edcrm.actors` runs them, `periodiq edcrm.actors` schedules the periodic ones.

The broker is configured first, from the environment (REDIS_URL: Redis; unset: in memory), and only
then are the actor modules imported, so every actor is declared on it.
"""

from ..jobs.broker import get_broker

broker = get_broker()

from . import imports, maintenance, recordings  # noqa: E402  (after the broker, on purpose)

__all__ = ["broker", "imports", "maintenance", "recordings"]
