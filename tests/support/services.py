"""The real services of the integration, browser and hostile tests (PostgreSQL, Redis), as session
fixtures that skip with a reason when a service is down, except under CI=true, where a missing service
fails the run. Registered for every test by tests/conftest.py."""

from __future__ import annotations

import os
import uuid

import pytest
import sqlalchemy as sa

IN_CI = os.environ.get("CI", "").lower() == "true"
PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def service_unavailable(name: str, reason: str):
    """Skip (or, under CI=true, fail) a test whose real service is missing."""
    message = f"{name} is not reachable ({reason}); start it (see README: Tests) to run this test"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_url():
    """A fresh, empty PostgreSQL database for this test session (dropped at the end)."""
    try:
        admin_engine = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin_engine.connect() as conn:
            name = f"edcrm_test_{uuid.uuid4().hex[:10]}"
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        service_unavailable("PostgreSQL", str(exc.orig).strip().splitlines()[0])
    url = sa.engine.make_url(PG_ADMIN_URL).set(database=name)
    yield url.render_as_string(hide_password=False)
    with admin_engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin_engine.dispose()


@pytest.fixture(scope="session")
def redis_url():
    """The Redis database of TEST_REDIS_URL (15 unless set), emptied for this test session."""
    import redis

    client = redis.Redis.from_url(TEST_REDIS_URL)
    try:
        client.flushdb()
    except redis.RedisError as exc:
        service_unavailable("Redis", str(exc))
    yield TEST_REDIS_URL
    client.flushdb()
    client.close()
