"""`flask --app app db upgrade / check / downgrade` on a fresh SQLite file and a fresh PostgreSQL database."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from tests.support.processes import fresh_postgres_database, run_flask, service_env

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


def test_0004_files_the_jobs_sent_before_it_under_their_branch(database_url, tmp_path):
    env = service_env(DATABASE_URL=database_url, EDCRM_INSTANCE_PATH=tmp_path / "instance", SECRET_KEY="x")
    run_flask("db", "upgrade", "0003", env=env)
    now = "2026-11-01 10:00:00+00:00"
    engine = sa.create_engine(database_url)
    try:
        with engine.begin() as conn:

            def insert(table: str, **values) -> None:
                names = ", ".join(values)
                conn.execute(sa.text(f"INSERT INTO {table} ({names}) VALUES (:{', :'.join(values)})"), values)

            for branch_id in (1, 2):
                insert("branches", id=branch_id, name=f"B{branch_id}", lead_cursor=0, created_at=now)
            insert(
                "users",
                id=7,
                email="t@b2.test",
                password_hash="x",
                role="telecaller",
                active=True,
                branch_id=2,
                created_at=now,
            )
            for job_id, actor in [
                ("j-import", "import_leads"),
                ("j-upload", "process_chunked_recording"),
                ("j-ping", "ping"),
            ]:
                insert(
                    "jobs",
                    id=job_id,
                    actor=actor,
                    queue="default",
                    args="[]",
                    kwargs="{}",
                    options="{}",
                    state="succeeded",
                    attempts=1,
                    retries=0,
                    max_retries=3,
                    enqueued_at=now,
                )
            insert(
                "lead_imports",
                id=1,
                branch_id=1,
                filename="a.csv",
                telecaller_ids="[]",
                status="completed",
                total_rows=0,
                processed_rows=0,
                successful_rows=0,
                failed_rows=0,
                duplicate_rows=0,
                distribution="{}",
                created_at=now,
                job_id="j-import",
                checkpoint_row=0,
            )
            insert(
                "recording_uploads",
                id="a" * 32,
                telecaller_id=7,
                filename="c.wav",
                kind="chunked",
                expected_chunks=1,
                status="completed",
                created_at=now,
                updated_at=now,
                job_id="j-upload",
            )

        run_flask("db", "upgrade", env=env)
        with engine.connect() as conn:
            branches = dict(conn.execute(sa.text("SELECT id, branch_id FROM jobs")).all())
        assert branches == {"j-import": 1, "j-upload": 2, "j-ping": None}
    finally:
        engine.dispose()
