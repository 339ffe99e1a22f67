"""Fixtures of the end-to-end tests: the app on a PostgreSQL database of its own; a migrated database
with the environment of the worker and the CLI on it (`env`); and the production processes on real
services (`stack` on moto's S3, `s3_stack` on moto's and on Ceph RGW, from tests/support/stack.py)."""

from __future__ import annotations

import pytest
import redis
import sqlalchemy as sa

from tests.support.database import postgres_app
from tests.support.processes import fresh_postgres_database, run_flask, service_env

# The production processes on real services (fixtures): on moto's S3, and on moto's then Ceph RGW.
from tests.support.stack import s3_stack, stack  # noqa: F401


@pytest.fixture
def pg_app(postgres_url, tmp_path):
    """The app on a PostgreSQL database of its own (created from the models, dropped afterwards)."""
    with postgres_app(postgres_url, tmp_path) as app:
        yield app


@pytest.fixture(scope="module")
def database(postgres_url, tmp_path_factory):
    """A PostgreSQL database of this module's own, migrated by `flask db upgrade` as an operator would."""
    instance = tmp_path_factory.mktemp("instance")
    with fresh_postgres_database(postgres_url) as url:
        run_flask("db", "upgrade", env=service_env(DATABASE_URL=url, EDCRM_INSTANCE_PATH=instance))
        yield url


@pytest.fixture
def engine(database):
    engine = sa.create_engine(database)
    yield engine
    engine.dispose()


@pytest.fixture
def env(database, redis_url, engine, tmp_path):
    """The environment of the worker and the CLI, with an empty ledger and an empty Redis database."""
    with engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE job_errors, jobs"))
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()
    return service_env(
        REDIS_URL=redis_url,
        DATABASE_URL=database,
        JOB_MIN_BACKOFF_MS="50",
        JOB_MAX_BACKOFF_MS="200",
        EDCRM_INSTANCE_PATH=tmp_path / "instance",
        STORAGE_URL=(tmp_path / "storage").as_uri(),
        SECRET_KEY="x",
    )
