"""Fixtures of the recordings tests that run on PostgreSQL: the app on a database of its own, inside its
app context, and a Dramatiq worker on its broker."""

from __future__ import annotations

import dramatiq
import pytest

from edcrm.jobs import broker_of
from tests.support.database import postgres_app
from tests.support.jobs import stop_worker


@pytest.fixture
def pg_app(postgres_url, tmp_path):
    """The app on a PostgreSQL database of its own (created from the models, dropped afterwards)."""
    with postgres_app(postgres_url, tmp_path) as app, app.app_context():
        yield app


@pytest.fixture
def pg_worker(pg_app, monkeypatch):
    """A worker on pg_app's broker: (broker, worker), for tests.support.jobs.run_jobs."""
    monkeypatch.setattr(dramatiq.worker, "CONSUMER_RESTART_DELAY_SECS", 0.05)
    broker = broker_of(pg_app)
    worker = dramatiq.Worker(broker, worker_timeout=50)
    worker.start()
    yield broker, worker
    stop_worker(broker, worker)
