"""A real `dramatiq edcrm.actors` worker on Redis and PostgreSQL, driven by the real `flask edcrm jobs` CLI.

Jobs are sent while the worker is stopped, so that each test sees the states it asserts (enqueued
first) rather than whichever one a fast worker left; the ledger is read straight from PostgreSQL.
"""

from __future__ import annotations

import pytest
import redis

from tests.support.processes import (
    Service,
    job_row,
    run_flask,
    start_dramatiq,
    wait_for,
    wait_for_job,
)

MAX_RETRIES = 3


class Worker:
    """Starts and stops `dramatiq edcrm.actors --processes 1 --threads 2`, one run after the other."""

    def __init__(self, env, tmp_path):
        self.env, self.tmp_path = env, tmp_path
        self.runs = 0
        self.service: Service | None = None

    def start(self) -> Service:
        self.runs += 1
        log = self.tmp_path / f"dramatiq-{self.runs}.log"
        self.service = start_dramatiq(self.env, log, processes=1, threads=2)
        return self.service

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop()
            assert self.service.process.returncode == 0, self.service.describe()
            self.service = None


@pytest.fixture
def worker(env, tmp_path):
    worker = Worker(env, tmp_path)
    yield worker
    if worker.service is not None:
        worker.service.stop()  # a failed test: no assertion here, just no leftover process


def wait_for_errors(engine, job_id: str, state: str, errors: int, *, watch: Service) -> dict:
    """The job's row once it is in state with that many error rows. An attempt's error row is written a
    moment after its retry is enqueued, so the next attempt may end before the previous error lands."""
    wait_for_job(engine, job_id, state, watch=watch)
    return wait_for(
        lambda: len((row := job_row(engine, job_id))["errors"]) >= errors and row,
        timeout=20,
        what=f"{errors} error rows of job {job_id}",
        watch=watch,
    )


def ping(env, *options: str) -> str:
    """`flask edcrm jobs ping [--fail]`: the id it prints."""
    (job_id,) = run_flask("edcrm", "jobs", "ping", *options, env=env).stdout.split()
    return job_id


def wait_until_redis_is_done(env, service: Service) -> None:
    """Until Redis holds no message of the default queue (each one was acked, or dead-lettered)."""
    client = redis.Redis.from_url(env["REDIS_URL"])
    try:
        wait_for(
            lambda: not client.hlen("dramatiq:default.msgs") and not client.hlen("dramatiq:default.DQ.msgs"),
            timeout=10,
            what="the worker to be done with every message",
            watch=service,
        )
    finally:
        client.close()


def test_a_ping_goes_from_enqueued_to_succeeded(env, engine, worker):
    job_id = ping(env)
    job = job_row(engine, job_id)
    assert (job["actor"], job["queue"], job["state"], job["attempts"]) == ("ping", "default", "enqueued", 0)

    job = wait_for_job(engine, job_id, "succeeded", watch=worker.start())

    assert job["attempts"] == 1
    assert job["errors"] == []
    assert job["enqueued_at"] <= job["started_at"] <= job["finished_at"]
    worker.stop()


def test_a_failing_ping_ends_failed_after_its_retries(env, engine, worker):
    job_id = ping(env, "--fail")
    assert job_row(engine, job_id)["state"] == "enqueued"

    job = wait_for_errors(engine, job_id, "failed", 1 + MAX_RETRIES, watch=worker.start())

    assert job["attempts"] == 1 + MAX_RETRIES
    assert sorted(e["attempt"] for e in job["errors"]) == [1, 2, 3, 4]
    assert all("PingFailure" in e["error"] for e in job["errors"]), job["errors"]
    assert job["finished_at"] is not None
    worker.stop()


def test_a_cancelled_job_never_runs(env, engine, worker):
    job_id = ping(env)
    result = run_flask("edcrm", "jobs", "cancel", job_id, env=env)
    assert result.stdout.strip() == f"{job_id} cancelled"
    # Sent after the cancelled one: once it ran, the worker has had the cancelled message in hand.
    sentinel = ping(env)

    service = worker.start()
    wait_for_job(engine, sentinel, "succeeded", watch=service)
    wait_until_redis_is_done(env, service)

    job = job_row(engine, job_id)
    assert (job["state"], job["attempts"], job["started_at"], job["errors"]) == ("cancelled", 0, None, [])
    worker.stop()


def test_retry_sends_a_failed_job_again_with_the_same_id(env, engine, worker):
    job_id = ping(env, "--fail")
    wait_for_job(engine, job_id, "failed", watch=worker.start())
    worker.stop()

    result = run_flask("edcrm", "jobs", "retry", job_id, env=env)
    assert result.stdout.strip() == f"{job_id} enqueued"
    job = job_row(engine, job_id)
    assert (job["state"], job["attempts"], job["finished_at"]) == ("enqueued", 1 + MAX_RETRIES, None)

    job = wait_for_errors(engine, job_id, "failed", 2 * (1 + MAX_RETRIES), watch=worker.start())

    # The same job ran through a fresh retry budget; its history keeps counting.
    assert job["attempts"] == 2 * (1 + MAX_RETRIES)
    assert sorted(e["attempt"] for e in job["errors"]) == list(range(1, 9))
    assert all("PingFailure" in e["error"] for e in job["errors"])
    worker.stop()


def test_a_retried_cancelled_job_runs_once(env, engine, worker):
    job_id = ping(env, "--fail")
    run_flask("edcrm", "jobs", "cancel", job_id, env=env)
    # The cancelled message is still in Redis, ahead of the one the retry sends with the same id: it must
    # skip itself, or both would run the job through its retries.
    assert run_flask("edcrm", "jobs", "retry", job_id, env=env).stdout.strip() == f"{job_id} enqueued"

    service = worker.start()
    wait_for_job(engine, job_id, "failed", watch=service)
    wait_until_redis_is_done(env, service)

    job = job_row(engine, job_id)
    assert (job["state"], job["attempts"], len(job["errors"])) == ("failed", 1 + MAX_RETRIES, 1 + MAX_RETRIES)
    worker.stop()
