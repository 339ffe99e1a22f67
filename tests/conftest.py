"""Fixtures: app, client, runner (flaskr's), the stub broker and a worker (Dramatiq's), users, and the
real services of the integration tests (PostgreSQL, Redis), which skip with a reason when a service is
down, except under CI=true, where a missing service fails the run."""

from __future__ import annotations

import os

# Before anything imports edcrm: unit tests run on the in-memory StubBroker, with short retry backoffs,
# and never on a database, broker or storage of the developer's environment.
for _name in ("REDIS_URL", "DATABASE_URL", "STORAGE_URL", "S3_ENDPOINT_URL", "SECRET_KEY"):
    os.environ.pop(_name, None)
os.environ["JOB_MIN_BACKOFF_MS"] = "10"
os.environ["JOB_MAX_BACKOFF_MS"] = "40"

import queue  # noqa: E402
import uuid  # noqa: E402

import dramatiq  # noqa: E402
import pytest  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from edcrm import create_app  # noqa: E402
from edcrm.extensions import db  # noqa: E402
from edcrm.jobs import ledger  # noqa: E402
from edcrm.jobs.broker import get_broker  # noqa: E402
from edcrm.jobs.embedded import stop_worker  # noqa: E402
from edcrm.models import ApiToken, Branch, Role, User  # noqa: E402

IN_CI = os.environ.get("CI", "").lower() == "true"
PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def service_unavailable(name: str, reason: str):
    """Skip (or, under CI=true, fail) a test whose real service is missing."""
    message = f"{name} is not reachable ({reason}); start it (see README: Tests) to run this test"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture
def app(tmp_path, monkeypatch):
    monkeypatch.setenv("EDCRM_INSTANCE_PATH", str(tmp_path / "instance"))
    app = create_app(
        {
            "TESTING": True,
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
    ledger.dispose_engine(app)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def _empty_queues(broker) -> None:
    # New queues rather than flush_all(): a message a stopped worker took but never acked would keep
    # its old queue's unfinished count above zero, and the next test's join() would wait forever.
    for name in list(broker.queues):
        broker.queues[name] = queue.Queue()
    for dead_letters in broker.dead_letters_by_queue.values():
        dead_letters.clear()


@pytest.fixture
def stub_broker(app):
    broker = get_broker()
    _empty_queues(broker)
    yield broker
    _empty_queues(broker)


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
    monkeypatch.setenv("EDCRM_INSTANCE_PATH", str(tmp_path / "pg-instance"))
    app = create_app(
        {
            "TESTING": True,
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
    ledger.dispose_engine(app)
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
