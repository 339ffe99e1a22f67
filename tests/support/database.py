"""The schema of the unit tests' SQLite databases, built once per session and copied for each app.

Building the schema (`db.create_all()`) costs more than a test's own work on SQLite; a copy of a file
holding it costs a fraction of a millisecond, and gives every test a database of its own all the same.
The files live on a RAM disk where there is one: on a disk, every commit and every closed connection
waits for the disk (a few milliseconds each, more while other processes write), and the suite commits
thousands of times.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from edcrm.extensions import db

#: Linux's RAM disk, where it is there and writable.
RAM_DISK = Path("/dev/shm")


@pytest.fixture(scope="session")
def sqlite_folder(tmp_path_factory):
    """Where the tests' SQLite files go: a folder of this session's on the RAM disk, else in its
    temporary folder."""
    if RAM_DISK.is_dir() and os.access(RAM_DISK, os.W_OK):
        with tempfile.TemporaryDirectory(dir=RAM_DISK, prefix="edcrm-tests-") as folder:
            yield Path(folder)
    else:
        yield tmp_path_factory.mktemp("databases")


@pytest.fixture(scope="session")
def sqlite_schema(sqlite_folder) -> Path:
    """An SQLite file holding the models' tables and nothing else."""
    path = sqlite_folder / "schema.sqlite3"
    engine = sa.create_engine(f"sqlite:///{path}")
    db.metadata.create_all(engine)
    engine.dispose()
    return path


@pytest.fixture
def new_sqlite_database(sqlite_schema):
    """Makes a new database with the models' tables, as often as a test asks: its
    SQLALCHEMY_DATABASE_URI. Its files go when the test ends."""
    made: list[Path] = []

    def new() -> str:
        path = sqlite_schema.parent / f"{uuid.uuid4().hex}.sqlite3"
        made.append(path)
        return sqlite_database(sqlite_schema, path)

    yield new
    for path in made:
        for name in (path.name, f"{path.name}-journal", f"{path.name}-wal", f"{path.name}-shm"):
            (path.parent / name).unlink(missing_ok=True)


def sqlite_database(schema: Path, path: Path) -> str:
    """A new SQLite database at path with the models' tables: its SQLALCHEMY_DATABASE_URI."""
    shutil.copyfile(schema, path)
    return f"sqlite:///{path}"


@contextlib.contextmanager
def postgres_app(postgres_url: str, tmp_path: Path):
    """The app on a PostgreSQL database of its own, created from the models and dropped afterwards."""
    from edcrm import create_app
    from edcrm.jobs import records
    from tests.support.jobs import JOB_BACKOFFS
    from tests.support.processes import fresh_postgres_database

    with fresh_postgres_database(postgres_url) as url:
        app = create_app(
            {
                "TESTING": True,
                "EDCRM_INSTANCE_PATH": str(tmp_path / "pg-instance"),
                **JOB_BACKOFFS,
                "SECRET_KEY": "test-secret",
                "SQLALCHEMY_DATABASE_URI": url,
                "STORAGE_URL": (tmp_path / "storage").as_uri(),
            }
        )
        with app.app_context():
            db.create_all()
        try:
            yield app
        finally:
            with app.app_context():
                db.session.remove()
                db.engine.dispose()
            records.dispose_engine(app)
