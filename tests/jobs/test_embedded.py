"""The embedded mode's workers and scheduler, in-process on the in-memory broker."""

from __future__ import annotations

import time

import pendulum
import pytest
from dramatiq.brokers.redis import RedisBroker

from edcrm.actors.maintenance import ping
from edcrm.config import QUEUES
from edcrm.extensions import db
from edcrm.jobs.embedded import EmbeddedWorkers
from edcrm.models import Job, JobState
from tests.support.jobs import stop_embedded


def wait_until(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return result


@pytest.fixture
def embedded(app, stub_broker):
    workers = EmbeddedWorkers(app, stub_broker).start()
    yield workers
    stop_embedded(workers)


def test_one_worker_per_queue_with_the_queues_concurrency(app, stub_broker, caplog):
    embedded = EmbeddedWorkers(app, stub_broker).start()
    try:
        _check_workers(app, embedded)
    finally:
        stop_embedded(embedded)
    # Three workers on one broker is the design, not the mistake Dramatiq warns of.
    assert "same type twice" not in caplog.text


def _check_workers(app, embedded):
    assert {tuple(w.consumer_whitelist): w.worker_threads for w in embedded.workers} == {
        (queue,): threads for queue, threads in QUEUES.items()
    }
    with app.app_context():
        job_id = ping.send().message_id
        wait_until(lambda: db.session.get(Job, job_id, populate_existing=True).state is JobState.SUCCEEDED)


def test_the_scheduler_runs_the_pruner_at_its_minute(app, stub_broker, monkeypatch):
    # Make the clock read 0.3 s before the next HH:17:00, the pruner's cron minute.
    real_now = pendulum.now
    start = real_now()
    target = start.replace(minute=17, second=0, microsecond=0)
    if target <= start:
        target = target.add(hours=1)
    offset = target - start - pendulum.duration(seconds=0.3)
    monkeypatch.setattr(pendulum, "now", lambda *args, **kwargs: real_now(*args, **kwargs) + offset)

    workers = EmbeddedWorkers(app, stub_broker).start()
    try:
        with app.app_context():
            pruner = wait_until(
                lambda: db.session.execute(db.select(Job).filter_by(actor="prune_jobs")).scalar_one_or_none(),
                5,
            )
            wait_until(
                lambda: db.session.get(Job, pruner.id, populate_existing=True).state is JobState.SUCCEEDED
            )
            assert pendulum.parse(pruner.options["scheduled_at"]) == target
    finally:
        stop_embedded(workers)
    with app.app_context():  # once, not once per loop
        assert db.session.execute(db.select(db.func.count()).where(Job.actor == "prune_jobs")).scalar() == 1


def test_refuses_to_run_on_redis(app):
    with pytest.raises(RuntimeError, match="in-memory broker"):
        EmbeddedWorkers(app, RedisBroker(url="redis://127.0.0.1:1/0")).start()
