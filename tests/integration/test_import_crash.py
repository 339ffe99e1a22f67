"""Exactly once through a crash: a real `dramatiq edcrm.actors` worker is SIGKILLed in the middle of an
import on Redis + PostgreSQL; Redis redelivers the unacked message to a new worker (the dead worker's
heartbeat times out, shortened here through BROKER_HEARTBEAT_TIMEOUT_MS), and the import ends with
exactly one lead per valid row."""

from __future__ import annotations

import csv
from collections import Counter

import sqlalchemy as sa

from tests.support.processes import fresh_postgres_database, run_flask, service_env, start_dramatiq, wait_for

ROWS = 150_000


def write_csv(path) -> tuple[int, int, int]:
    """A CSV of ROWS rows, some invalid, some repeating an earlier phone: (valid, invalid, duplicates)."""
    valid = invalid = duplicates = 0
    with open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["name", "phone", "email"])
        for n in range(ROWS):
            if n % 50 == 49:
                writer.writerow([f"Bad {n}", "12345", ""])
                invalid += 1
            elif n % 70 == 69:
                writer.writerow([f"Again {n}", f"+91 97{(n - 1):08d}", ""])  # the row before's phone
                duplicates += 1
            else:
                writer.writerow([f"Student {n}", f"97{n:08d}", f"s{n}@example.com"])
                valid += 1
    return valid, invalid, duplicates


def test_a_sigkilled_worker_mid_import_loses_and_duplicates_nothing(postgres_url, redis_url, tmp_path):
    with fresh_postgres_database(postgres_url) as database_url:
        storage = tmp_path / "storage"
        env = service_env(
            DATABASE_URL=database_url,
            REDIS_URL=redis_url,
            STORAGE_URL=storage.as_uri(),
            SECRET_KEY="test",
            EDCRM_INSTANCE_PATH=tmp_path / "instance",
            BROKER_HEARTBEAT_TIMEOUT_MS=3000,
            BROKER_MAINTENANCE_PER_MILLION=1_000_000,  # every broker command looks for dead workers
        )
        run_flask("db", "upgrade", env=env)
        for n in (1, 2, 3):
            run_flask(
                "edcrm", "create-user", "--email", f"caller{n}@kochi.test", "--password", "secret-password",
                "--role", "telecaller", "--branch", "Kochi", env=env,
            )  # fmt: skip
        csv_path = tmp_path / "leads.csv"
        valid, invalid, duplicates = write_csv(csv_path)
        engine = sa.create_engine(database_url)

        def import_row():
            with engine.connect() as conn:
                return conn.execute(sa.text("SELECT * FROM lead_imports")).mappings().first()

        def lead_count():
            with engine.connect() as conn:
                return conn.execute(sa.text("SELECT count(*) FROM leads")).scalar_one()

        try:
            first = start_dramatiq(env, tmp_path / "worker-1.log", processes=1, threads=1)
            queued = run_flask(
                "edcrm", "import-csv", str(csv_path), "--branch", "Kochi",
                "--telecallers", "caller1@kochi.test,caller2@kochi.test,caller3@kochi.test", env=env,
            )  # fmt: skip
            assert "queued" in queued.stdout

            # Some batches committed, more to come: kill the worker (and its children) at once.
            wait_for(
                lambda: (row := import_row()) and 0 < row["processed_rows"] < ROWS // 2,
                timeout=120,
                what="the import to be under way",
                watch=first,
                interval=0.01,
            )
            first.kill()
            killed_at = import_row()
            leads_at_kill = lead_count()
            assert killed_at["status"] == "running"
            assert 0 < killed_at["processed_rows"] < ROWS
            assert leads_at_kill == killed_at["successful_rows"]  # committed batches only

            second = start_dramatiq(env, tmp_path / "worker-2.log", processes=1, threads=1)
            done = wait_for(
                lambda: (row := import_row())["status"] != "running" and row,
                timeout=180,
                what="the redelivered import to finish",
                watch=second,
                interval=0.2,
            )
            second.stop()
        finally:
            for worker in ("first", "second"):
                service = locals().get(worker)
                if service is not None:
                    service.kill()

        assert done["status"] == "completed", done["error"]
        assert (done["total_rows"], done["processed_rows"]) == (ROWS, ROWS)
        assert (done["successful_rows"], done["failed_rows"], done["duplicate_rows"]) == (
            valid,
            invalid,
            duplicates,
        )
        with engine.connect() as conn:
            leads = conn.execute(sa.text("SELECT source_row, phone_number, telecaller_id FROM leads")).all()
            rejections = conn.execute(
                sa.text("SELECT count(*), count(DISTINCT row_number) FROM import_rejections")
            )
            rejected, distinct_rejected = rejections.one()
            job = conn.execute(
                sa.text("SELECT state, attempts FROM jobs WHERE id = :id"), {"id": done["job_id"]}
            )
            job_state, job_attempts = job.one()
        assert len(leads) == valid  # exactly one lead per valid row: none lost, none twice
        assert len({lead.source_row for lead in leads}) == valid
        assert len({lead.phone_number for lead in leads}) == valid
        assert rejected == distinct_rejected == invalid + duplicates
        per_telecaller = Counter(lead.telecaller_id for lead in leads)
        assert max(per_telecaller.values()) - min(per_telecaller.values()) <= 1
        assert job_state == "succeeded" and job_attempts == 2  # the redelivery finished the same job
        assert done["storage_key"] is None and not any(p.is_file() for p in storage.rglob("*"))
        engine.dispose()
