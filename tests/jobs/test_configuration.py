"""The job system is configured by each app, from its configuration, when the app is created."""

from __future__ import annotations

import socket

import dramatiq
import pytest
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Retries

from edcrm import create_app
from edcrm.actors.maintenance import ping
from edcrm.extensions import db
from edcrm.jobs import actor, broker_of, records
from edcrm.jobs.middleware import JobLedger


@pytest.fixture
def make_app(tmp_path):
    """make_app(**config): an app of its own on the test's database; disposed of afterwards."""
    made = []

    def make_app(**config):
        made.append(
            create_app(
                {
                    "TESTING": True,
                    "EDCRM_INSTANCE_PATH": str(tmp_path / "instance"),
                    "SECRET_KEY": "test-secret",
                    "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'edcrm.sqlite3'}",
                    "STORAGE_URL": (tmp_path / "storage").as_uri(),
                }
                | config
            )
        )
        return made[-1]

    yield make_app
    for app in made:
        with app.app_context():
            db.engine.dispose()
        records.dispose_engine(app)


def middleware_of(broker: dramatiq.Broker, kind: type):
    (found,) = [middleware for middleware in broker.middleware if isinstance(middleware, kind)]
    return found


def test_redis_url_builds_a_redis_broker_with_the_configured_backoffs(make_app):
    # Nothing listens on port 1: building the app must not connect.
    app = make_app(
        REDIS_URL="redis://127.0.0.1:1/0",
        JOB_MIN_BACKOFF_MS=1234,
        JOB_MAX_BACKOFF_MS=5678,
        BROKER_HEARTBEAT_TIMEOUT_MS=9000,
        BROKER_MAINTENANCE_PER_MILLION=7,
    )
    broker = broker_of(app)
    assert isinstance(broker, RedisBroker)
    retries = middleware_of(broker, Retries)
    assert (retries.min_backoff, retries.max_backoff, retries.max_retries) == (1234, 5678, 3)
    assert (broker.heartbeat_timeout, broker.maintenance_chance) == (9000, 7)
    assert middleware_of(broker, JobLedger).app is app


def test_without_redis_url_the_broker_is_in_memory_with_the_default_backoffs(make_app):
    broker = broker_of(make_app())
    assert isinstance(broker, StubBroker)
    retries = middleware_of(broker, Retries)
    assert (retries.min_backoff, retries.max_backoff) == (15_000, 600_000)


def test_two_apps_have_two_brokers_and_the_second_has_every_actor(make_app):
    first, second = make_app(), make_app()
    assert broker_of(first) is not broker_of(second)
    assert dramatiq.get_broker() is broker_of(second)
    assert broker_of(second).get_actor("ping") is ping and ping.broker is broker_of(second)
    expected = {"ping", "prune_jobs", "prune_upload_sessions", "import_leads", "process_chunked_recording"}
    assert expected <= set(broker_of(second).actors)


def test_the_ledger_declares_the_serves_option_and_unknown_options_are_refused(stub_broker):
    assert "serves" in stub_broker.actor_options
    with pytest.raises(ValueError, match="colour"):

        @actor(colour="red")
        def painted() -> None:
            pass


def test_an_app_whose_redis_is_down_says_so_on_its_health_check(make_app):
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    app = make_app(REDIS_URL=f"redis://127.0.0.1:{port}/0")  # nothing listens: refused at once
    with app.app_context():
        db.create_all()
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["broker"] == "down: ConnectionError"
