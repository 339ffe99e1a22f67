"""An operator's import on PostgreSQL and Redis: `flask edcrm import-csv` hands the job to a real
`dramatiq edcrm.actors` worker (it runs none itself) and, with --wait, follows it to the end."""

from __future__ import annotations

import json
import subprocess

import pytest
import sqlalchemy as sa

from tests.support.processes import (
    BIN,
    REPO,
    fresh_postgres_database,
    run_flask,
    service_env,
    start_dramatiq,
    wait_for,
)

ROWS = 3000  # enough for the command to see the import run, not only end


@pytest.fixture
def env(postgres_url, redis_url, tmp_path):
    """A migrated PostgreSQL database with the demo branch, an empty Redis database, local storage."""
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()
    with fresh_postgres_database(postgres_url) as url:
        env = service_env(
            REDIS_URL=redis_url,
            DATABASE_URL=url,
            EDCRM_INSTANCE_PATH=tmp_path / "instance",
            STORAGE_URL=(tmp_path / "storage").as_uri(),
            SECRET_KEY="x",
            JOB_MIN_BACKOFF_MS="50",
            JOB_MAX_BACKOFF_MS="200",
        )
        run_flask("db", "upgrade", env=env)
        yield env


@pytest.fixture
def demo(env) -> dict:
    """The demo branch's admin and three telecallers (`seed-demo --json`)."""
    return json.loads(run_flask("edcrm", "seed-demo", "--json", env=env).stdout)


@pytest.fixture
def engine(env):
    engine = sa.create_engine(env["DATABASE_URL"])
    yield engine
    engine.dispose()


def leads_csv(path, rows: int):
    lines = ["Student Name,Mobile,Email"]
    lines += [f"Student {n},98{n:08d},student{n}@example.com" for n in range(rows)]
    lines.append("Broken,12345,")  # one invalid row
    path.write_text("\n".join(lines) + "\n")
    return path


def import_csv(env, *args, timeout=120):
    return subprocess.run(
        [str(BIN / "flask"), "--app", "app", "edcrm", "import-csv", *map(str, args)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_import_csv_waits_for_a_real_worker(env, demo, engine, tmp_path):
    emails = ",".join(t["email"] for t in demo["telecallers"])
    path = leads_csv(tmp_path / "leads.csv", ROWS)

    with start_dramatiq(env, tmp_path / "dramatiq.log", processes=1, threads=2) as worker:
        result = import_csv(env, path, "--branch", "Demo Branch", "--telecallers", emails, "--wait")

        assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{worker.describe()}"
    assert f"completed: {ROWS + 1} rows, {ROWS} imported, 1 invalid, 0 duplicates" in result.stdout
    assert "Importing leads.csv" in result.stderr  # the progress bar
    with engine.connect() as conn:
        per_caller = dict(
            conn.execute(sa.text("SELECT telecaller_id, count(*) FROM leads GROUP BY telecaller_id")).all()
        )
        status, created_by = conn.execute(sa.text("SELECT status, created_by_id FROM lead_imports")).one()
    assert sum(per_caller.values()) == ROWS
    assert sorted(per_caller) == sorted(t["id"] for t in demo["telecallers"])
    assert max(per_caller.values()) - min(per_caller.values()) <= 1
    assert (status, created_by) == ("completed", None)


def test_without_wait_it_returns_once_queued_and_a_worker_runs_it_later(env, demo, engine, tmp_path):
    path = leads_csv(tmp_path / "leads.csv", 10)

    result = import_csv(
        env, path, "--branch", "Demo Branch", "--telecallers", demo["telecallers"][0]["email"]
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("import ") and "queued (job " in result.stdout
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT status FROM lead_imports")).scalar_one() == "queued"

    def finished():
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT status FROM lead_imports")).scalar_one() == "completed"

    with start_dramatiq(env, tmp_path / "dramatiq.log", processes=1, threads=2) as worker:
        wait_for(finished, timeout=60, what="the import to complete", watch=worker)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM leads")).scalar_one() == 10
