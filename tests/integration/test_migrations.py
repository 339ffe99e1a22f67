"""`flask --app app db upgrade / check / downgrade` on a fresh SQLite file and a fresh PostgreSQL database."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from .helpers import fresh_postgres_database, run_flask, service_env

pytestmark = pytest.mark.integration

#: Tables the models need now; later issues add more, which the drift check covers.
CORE_TABLES = {"branches", "users", "api_tokens", "leads", "lead_imports", "call_logs", "jobs", "job_errors"}


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
    else:
        with fresh_postgres_database(request.getfixturevalue("postgres_url")) as url:
            yield url


def tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def head_revision(url: str) -> str | None:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        engine.dispose()


def test_upgrade_check_downgrade_and_upgrade_again(database_url, tmp_path):
    env = service_env(DATABASE_URL=database_url, EDCRM_INSTANCE_PATH=tmp_path / "instance", SECRET_KEY="x")
    heads = run_flask("db", "heads", env=env).stdout.split()[0]

    run_flask("db", "upgrade", env=env)
    assert tables(database_url) >= CORE_TABLES
    assert head_revision(database_url) == heads

    # The models and the migrations describe the same schema: nothing left to autogenerate.
    check = run_flask("db", "check", env=env, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "No new upgrade operations detected" in check.stdout + check.stderr

    run_flask("db", "downgrade", "base", env=env)
    assert tables(database_url) <= {"alembic_version"}
    assert head_revision(database_url) is None

    # Nothing the downgrade left behind (a type, an index, a sequence) gets in the way of a new upgrade.
    run_flask("db", "upgrade", env=env)
    assert tables(database_url) >= CORE_TABLES
    assert run_flask("db", "check", env=env, check=False).returncode == 0
