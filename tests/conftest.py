"""Fixtures: app, client, runner (flaskr's), the stub broker and a worker (Dramatiq's), a branch and its
people; the markers each folder sets. The real services (tests/support/services.py) and moto's S3 server
(tests/support/s3_server.py) are fixtures of every test; the other helpers live in tests/support/."""

from __future__ import annotations

import tempfile
from pathlib import Path

import dramatiq
import dramatiq.worker
import pytest

# Before the helpers are imported, so that their asserts explain themselves as the tests' own do.
pytest.register_assert_rewrite("tests.support")

from edcrm import create_app  # noqa: E402
from edcrm.extensions import db  # noqa: E402
from edcrm.jobs import broker_of, records  # noqa: E402
from edcrm.models import Branch, Role  # noqa: E402
from tests.support.jobs import JOB_BACKOFFS, stop_worker  # noqa: E402
from tests.support.people import hash_each_password_once, make_user  # noqa: E402
from tests.support.routing import compile_rules_once  # noqa: E402

#: What a developer's environment may point at: no test's app reads them (see _no_environment).
SERVICE_VARIABLES = ("REDIS_URL", "DATABASE_URL", "STORAGE_URL", "S3_ENDPOINT_URL", "SECRET_KEY")

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
def app(tmp_path, new_sqlite_database):
    app = create_app(
        {
            "TESTING": True,
            "EDCRM_INSTANCE_PATH": str(tmp_path / "instance"),
            **JOB_BACKOFFS,
            "SECRET_KEY": "test-secret",
            "SQLALCHEMY_DATABASE_URI": new_sqlite_database(),
            "STORAGE_URL": (tmp_path / "storage").as_uri(),
            "WTF_CSRF_ENABLED": False,
        }
    )
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
def stub_worker(stub_broker, monkeypatch):
    # A paused consumer thread leaves its consumer and sleeps the restart delay (3 s) before it says
    # it is paused: Worker.pause() would take that long. One poll of the worker's is enough here.
    monkeypatch.setattr(dramatiq.worker, "CONSUMER_RESTART_DELAY_SECS", 0.05)
    worker = dramatiq.Worker(stub_broker, worker_timeout=50)
    worker.start()
    yield worker
    stop_worker(stub_broker, worker)


# -- markers and shared fixtures ------------------------------------------------------------------------

pytest_plugins = [
    "tests.support.database",
    "tests.support.services",
    "tests.support.s3_server",
    "tests.support.rgw",
]

#: Each folder's marker: `-m "not integration and not browser and not hostile"` is the unit suite.
FOLDER_MARKERS = {
    "integration": pytest.mark.integration,
    "browser": pytest.mark.browser,
    "hostile": pytest.mark.hostile,
}
TESTS = Path(__file__).parent


def pytest_configure(config):
    compile_rules_once()  # every test makes an app: see tests/support/routing.py
    hash_each_password_once()  # the CLI's seed-demo sets four passwords per run: see tests/support/people.py


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    for item in items:
        folder = item.path.relative_to(TESTS).parts[0] if item.path.is_relative_to(TESTS) else None
        if folder in FOLDER_MARKERS:
            item.add_marker(FOLDER_MARKERS[folder])


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


@pytest.fixture
def callers(branch):
    """Three active telecallers of the admin's branch (Kochi)."""
    return [make_user(branch, Role.TELECALLER, email=f"caller{n}@kochi.test") for n in (1, 2, 3)]
