"""The embedded mode (no REDIS_URL, SQLite) loses no job across a restart: the server started the way
`make run` starts it re-sends what the previous process left enqueued, running or retrying."""

from __future__ import annotations

import sys

import pytest
import sqlalchemy as sa

from tests.support.processes import (
    REPO,
    Service,
    free_port,
    http_get,
    job_row,
    run_flask,
    service_env,
    start_gunicorn,
    wait_for,
    wait_for_job,
)

#: A process of the embedded mode that gets killed with a job half done: it starts the embedded workers,
#: sends one ping and prints its id, then waits for its end. With "running", its ping never returns (so
#: the kill lands mid-run); with "retrying", the ping fails and its retry waits out the backoff.
KILLED_MID_JOB = """
import sys, time
from app import app
from edcrm.actors import maintenance
from edcrm.jobs.embedded import EmbeddedWorkers

if sys.argv[1] == "running":
    maintenance.ping.fn = lambda *args, **kwargs: time.sleep(3600)
EmbeddedWorkers(app).start()
print("sent", maintenance.ping.send(fail=sys.argv[1] == "retrying").message_id, flush=True)
time.sleep(3600)
"""


class Embedded:
    """One SQLite database, instance folder and storage folder, shared by the runs of a test."""

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.database_url = f"sqlite:///{tmp_path / 'edcrm.sqlite3'}"
        self.port = free_port()
        # What `make run` has: no REDIS_URL, no SECRET_KEY (generated in the instance folder).
        self.env = service_env(
            DATABASE_URL=self.database_url,
            EDCRM_INSTANCE_PATH=tmp_path / "instance",
            STORAGE_URL=(tmp_path / "storage").as_uri(),
            PORT=self.port,
            JOB_MIN_BACKOFF_MS="50",
            JOB_MAX_BACKOFF_MS="200",
        )
        self.engine = sa.create_engine(self.database_url)

    def kill_mid_job(self, state: str, **env: str) -> str:
        """Run KILLED_MID_JOB until its job is in state, SIGKILL it: the job's id."""
        log = self.tmp_path / f"killed-{state}.log"
        service = Service(
            [sys.executable, "-c", KILLED_MID_JOB, state], env=self.env | env, log_path=log, name="killed"
        )
        try:
            line = wait_for(
                lambda: next((ln for ln in service.output().splitlines() if ln.startswith("sent ")), None),
                timeout=20,
                what="the job to be sent",
                watch=service,
            )
            job_id = line.split()[1]
            wait_for_job(self.engine, job_id, state, watch=service)
        finally:
            service.kill()
        return job_id

    def serve(self) -> Service:
        """`gunicorn -c gunicorn.conf.py app:app`, once it answers GET /healthz with 200."""
        assert (REPO / "gunicorn.conf.py").exists(), "gunicorn.conf.py is missing: `make run` serves with it"
        server = start_gunicorn(self.env, self.tmp_path / "gunicorn.log")
        url = f"http://127.0.0.1:{self.port}/healthz"
        status, body = wait_for(lambda: http_get(url), timeout=30, what=f"{url} to answer", watch=server)
        assert (status, body) == (200, {"database": "ok", "broker": "ok", "storage": "ok"}), server.describe()
        return server


@pytest.fixture
def embedded(tmp_path):
    embedded = Embedded(tmp_path)
    run_flask("db", "upgrade", env=embedded.env)
    yield embedded
    embedded.engine.dispose()


def test_a_job_left_enqueued_runs_after_a_restart(embedded):
    # The CLI's process has the in-memory broker and no workers: the message dies with it.
    (job_id,) = run_flask("edcrm", "jobs", "ping", env=embedded.env).stdout.split()
    job = job_row(embedded.engine, job_id)
    assert (job["state"], job["attempts"]) == ("enqueued", 0)

    with embedded.serve() as server:
        job = wait_for_job(embedded.engine, job_id, "succeeded", watch=server)

    assert (job["attempts"], job["errors"]) == (1, [])


def test_a_job_left_running_by_a_killed_process_runs_again(embedded):
    job_id = embedded.kill_mid_job("running")
    assert job_row(embedded.engine, job_id)["attempts"] == 1

    with embedded.serve() as server:
        job = wait_for_job(embedded.engine, job_id, "succeeded", watch=server)

    # The killed attempt counts: this was the second.
    assert (job["attempts"], job["errors"]) == (2, [])


def test_a_job_left_retrying_finishes_its_retries_after_a_restart(embedded):
    # A backoff long enough for the kill to land while the retry waits in the dead process's memory.
    job_id = embedded.kill_mid_job("retrying", JOB_MIN_BACKOFF_MS="1500", JOB_MAX_BACKOFF_MS="1500")
    assert job_row(embedded.engine, job_id)["attempts"] == 1

    with embedded.serve() as server:
        job = wait_for_job(embedded.engine, job_id, "failed", watch=server)

    assert job["attempts"] == 4
    assert [e["attempt"] for e in job["errors"]] == [1, 2, 3, 4]
    assert all("PingFailure" in e["error"] for e in job["errors"])
