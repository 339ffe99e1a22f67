"""create_app({"REDIS_URL": …}) sends its jobs through Redis: the configuration is what is used."""

from __future__ import annotations

import json
import statistics
import time

import pytest
import redis
from dramatiq import Worker

from edcrm import create_app, jobs
from edcrm.actors.maintenance import ping
from edcrm.extensions import db
from edcrm.jobs import records
from edcrm.models import Job, JobState

pytestmark = pytest.mark.integration


def redis_app(redis_url: str, tmp_path):
    """The app on SQLite and local storage, its jobs going through Redis."""
    return create_app(
        {
            "TESTING": True,
            "EDCRM_INSTANCE_PATH": str(tmp_path / "instance"),
            "SECRET_KEY": "test-secret",
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'edcrm.sqlite3'}",
            "STORAGE_URL": (tmp_path / "storage").as_uri(),
            "REDIS_URL": redis_url,
        }
    )


def test_a_job_sent_by_an_app_configured_with_redis_waits_in_redis(redis_url, tmp_path):
    app = redis_app(redis_url, tmp_path)
    client = redis.Redis.from_url(redis_url)
    try:
        with app.app_context():
            db.create_all()
            job_id = jobs.send(ping)
            assert db.session.get(Job, job_id).state is JobState.ENQUEUED
        # Dramatiq's Redis broker keeps a queue's messages in the hash `dramatiq:QUEUE.msgs`.
        waiting = [json.loads(data)["message_id"] for data in client.hvals("dramatiq:default.msgs")]
        assert waiting == [job_id]
    finally:
        client.flushdb()
        client.close()
        with app.app_context():
            db.engine.dispose()
        records.dispose_engine(app)


def test_an_idle_worker_starts_a_new_job_within_a_fraction_of_a_second(redis_url, tmp_path):
    """A recording whose last byte arrived is picked up at once, not after Dramatiq's idle backoff (up to
    a second): the worker has idled long enough for that backoff to be at its longest each time."""
    app = redis_app(redis_url, tmp_path)
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    worker = Worker(jobs.broker_of(app), queues={"default"}, worker_threads=1)
    worker.start()
    waits = []
    try:
        with app.app_context():
            db.create_all()
            for _ in range(3):
                time.sleep(2.5)  # idle: Dramatiq's own backoff would have grown to its 1 s
                sent = time.monotonic()
                job_id = jobs.send(ping)
                while db.session.get(Job, job_id).state is not JobState.SUCCEEDED:
                    assert time.monotonic() - sent < 10, "the job never ran"
                    time.sleep(0.01)
                    db.session.expire_all()
                waits.append(time.monotonic() - sent)
    finally:
        worker.stop()
        client.flushdb()
        client.close()
        with app.app_context():
            db.engine.dispose()
        records.dispose_engine(app)
    assert statistics.median(waits) < 0.4, f"sent → succeeded took {waits} s"
