"""The job ledger on PostgreSQL: connections dropped under its engine."""

from __future__ import annotations

import dramatiq
import sqlalchemy as sa

from edcrm.extensions import db
from edcrm.jobs import actor, broker_of
from edcrm.jobs.embedded import stop_worker
from edcrm.models import Job, JobState
from tests.support.jobs import run_jobs

calls: dict[str, int] = {}


@actor()
def pg_flaky(key: str, failures: int) -> None:
    """Fails `failures` times, then succeeds."""
    calls[key] = calls.get(key, 0) + 1
    if calls[key] <= failures:
        raise RuntimeError(f"flaky failure {calls[key]}")


def job(job_id: str) -> Job:
    db.session.expire_all()
    return db.session.get(Job, job_id)


def test_the_ledger_carries_on_after_postgresql_drops_its_connections(pg_app, caplog):
    """The ledger engine skips the pool's pre-ping: a connection closed under it (a database restart,
    an idle timeout) must cost one retry of the statement, never a job's ledger row."""
    broker = broker_of(pg_app)
    worker = dramatiq.Worker(broker, worker_timeout=50)
    worker.start()
    try:
        with pg_app.app_context():
            first = pg_flaky.send("before", 0)
            run_jobs(broker, worker)
            assert job(first.message_id).state is JobState.SUCCEEDED

            db.session.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
            db.session.commit()

            second = pg_flaky.send("after", 1)  # one failure (an error row), then success
            run_jobs(broker, worker)
            row = job(second.message_id)
            assert (row.state, row.attempts) == (JobState.SUCCEEDED, 2)
            assert [error.error for error in row.errors] == ["RuntimeError: flaky failure 1"]
            # Every ledger write went through (Dramatiq logs a middleware's failure and carries on).
            assert not [r for r in caplog.records if r.name.startswith("dramatiq.broker")]
    finally:
        stop_worker(broker, worker)
