"""Fixtures: app, client, runner (flaskr's), the stub broker and a worker (Dramatiq's), users, and the
real services of the integration tests (PostgreSQL, Redis), which skip with a reason when a service is
down, except under CI=true, where a missing service fails the run."""

from __future__ import annotations

import os
import tempfile
import uuid

import dramatiq
import pytest
import sqlalchemy as sa

from edcrm import create_app
from edcrm.extensions import db
from edcrm.jobs import broker_of, records
from edcrm.jobs.embedded import stop_worker
from edcrm.models import ApiToken, Branch, Role, User

#: What a developer's environment may point at: no test's app reads them (see _no_environment).
SERVICE_VARIABLES = ("REDIS_URL", "DATABASE_URL", "STORAGE_URL", "S3_ENDPOINT_URL", "SECRET_KEY")
#: Short retry backoffs (ms), so that a job's retries take no time in a test.
JOB_BACKOFFS = {"JOB_MIN_BACKOFF_MS": 10, "JOB_MAX_BACKOFF_MS": 40}

IN_CI = os.environ.get("CI", "").lower() == "true"
PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def service_unavailable(name: str, reason: str):
    """Skip (or, under CI=true, fail) a test whose real service is missing."""
    message = f"{name} is not reachable ({reason}); start it (see README: Tests) to run this test"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


#: Test modules import edcrm.actors as they are collected, before any test runs: this app (in memory,
#: on a throwaway directory) has configured the job system by then, so that no worker app is built
#: from the developer's environment.
_COLLECTION_DIRECTORY = tempfile.TemporaryDirectory(prefix="edcrm-tests-")
create_app(
    {
        "TESTING": True,
        "EDCRM_INSTANCE_PATH": _COLLECTION_DIRECTORY.name,
        "SECRET_KEY": "test-secret",
        "REDIS_URL": None,
        "SQLALCHEMY_DATABASE_URI": "sqlite://",
        "STORAGE_URL": f"file://{_COLLECTION_DIRECTORY.name}/storage",
    },
    web=False,
)


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch):
    """Unit tests run on the in-memory broker and never on a database, broker or storage of the
    developer's environment, whatever app they create."""
    for name in SERVICE_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def app(tmp_path):
    app = create_app(
        {
            "TESTING": True,
            "EDCRM_INSTANCE_PATH": str(tmp_path / "instance"),
            **JOB_BACKOFFS,
            "SECRET_KEY": "test-secret",
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'edcrm.sqlite3'}",
            "STORAGE_URL": (tmp_path / "storage").as_uri(),
            "WTF_CSRF_ENABLED": False,
        }
    )
    with app.app_context():
        db.create_all()
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
    records.dispose_engine(app)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def stub_broker(app):
    """The app's own broker: a fresh StubBroker for every test (each app builds its own)."""
    return broker_of(app)


@pytest.fixture
def stub_worker(stub_broker):
    worker = dramatiq.Worker(stub_broker, worker_timeout=50)
    worker.start()
    yield worker
    stop_worker(stub_broker, worker)


# -- people ----------------------------------------------------------------------------------------------


def make_user(
    branch: Branch,
    role: Role = Role.TELECALLER,
    *,
    email: str | None = None,
    password: str = "secret-password",
    active: bool = True,
) -> User:
    user = User(
        email=email or f"{role.value}-{uuid.uuid4().hex[:8]}@example.test",
        role=role,
        branch=branch,
        active=active,
    )
    user.set_password(password)
    db.session.add(user)
    db.session.commit()
    return user


def bearer(user: User) -> dict[str, str]:
    """Authorization headers with a fresh token of user's."""
    token = ApiToken.issue(user)
    db.session.commit()
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def branch(app):
    with app.app_context():
        branch = Branch(name="Kochi")
        db.session.add(branch)
        db.session.commit()
        yield branch


@pytest.fixture
def other_branch(branch):
    """A second branch, whose people and records the first branch's must never reach."""
    other = Branch(name="Thrissur")
    db.session.add(other)
    db.session.commit()
    return other


@pytest.fixture
def admin(branch):
    return make_user(branch, Role.ADMIN, email="admin@kochi.test")


@pytest.fixture
def telecaller(branch):
    return make_user(branch, Role.TELECALLER, email="caller@kochi.test")


# -- real services ---------------------------------------------------------------------------------------


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


@pytest.fixture
def pg_app(postgres_url, tmp_path, monkeypatch):
    """The app on a PostgreSQL database of its own (created from the models, dropped afterwards)."""
    url = sa.engine.make_url(postgres_url)
    name = f"{url.database}_api_{uuid.uuid4().hex[:6]}"
    admin_engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin_engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    app = create_app(
        {
            "TESTING": True,
            "EDCRM_INSTANCE_PATH": str(tmp_path / "pg-instance"),
            **JOB_BACKOFFS,
            "SECRET_KEY": "test-secret",
            "SQLALCHEMY_DATABASE_URI": url.set(database=name).render_as_string(hide_password=False),
            "STORAGE_URL": (tmp_path / "storage").as_uri(),
        }
    )
    with app.app_context():
        db.create_all()
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
    records.dispose_engine(app)
    with admin_engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin_engine.dispose()


@pytest.fixture(scope="session")
def redis_url():
    """Redis database 15, emptied for this test session."""
    import redis

    client = redis.Redis.from_url(TEST_REDIS_URL)
    try:
        client.flushdb()
    except redis.RedisError as exc:
        service_unavailable("Redis", str(exc))
    yield TEST_REDIS_URL
    client.flushdb()
    client.close()
