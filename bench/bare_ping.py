"""Bare Dramatiq for bench/jobs.py: edcrm's no-op `ping` actor on a plain RedisBroker with Dramatiq's
default middleware, no ledger and no Flask app. Run as `dramatiq bench.bare_ping` with REDIS_URL set."""

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

broker = RedisBroker(url=os.environ["REDIS_URL"])
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name="default", max_retries=3)
def ping(fail: bool = False) -> None:
    if fail:
        raise RuntimeError("ping asked to fail")
