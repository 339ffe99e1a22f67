"""Bare Dramatiq for bench/jobs.py: a no-op `ping` actor on queue `default`, on a plain RedisBroker with
Dramatiq's default middleware; no ledger, no Flask app.

    REDIS_URL=redis://… dramatiq bench.bare_actors --path . --queues default --processes 1 --threads 8
"""

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

# The client connects on first use, not here.
broker = RedisBroker(url=os.environ["REDIS_URL"])
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name="default")
def ping() -> None:
    """Do nothing."""
