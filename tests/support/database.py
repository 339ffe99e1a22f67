"""The schema of the unit tests' SQLite databases, built once per session and copied for each app.

Building the schema (`db.create_all()`) costs more than a test's own work on SQLite; a copy of a file
holding it costs a fraction of a millisecond, and gives every test a database of its own all the same.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa

from edcrm.extensions import db


@pytest.fixture(scope="session")
def sqlite_schema(tmp_path_factory) -> Path:
    """An SQLite file holding the models' tables and nothing else."""
    path = tmp_path_factory.mktemp("schema") / "edcrm.sqlite3"
    engine = sa.create_engine(f"sqlite:///{path}")
    db.metadata.create_all(engine)
    engine.dispose()
    return path


def sqlite_database(schema: Path, path: Path) -> str:
    """A new SQLite database at path with the models' tables: its SQLALCHEMY_DATABASE_URI."""
    shutil.copyfile(schema, path)
    return f"sqlite:///{path}"
