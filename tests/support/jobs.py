"""Running the queued jobs of a test to their end on the StubBroker, and a flaky job to run."""

from __future__ import annotations

import dramatiq
import flask

from edcrm.extensions import db
from edcrm.jobs import actor
from edcrm.jobs.embedded import EmbeddedWorkers
from edcrm.jobs.embedded import stop_worker as stop_embedded_worker

#: Short retry backoffs (ms) for the apps of the tests, so that a job's retries take no time.
JOB_BACKOFFS = {"JOB_MIN_BACKOFF_MS": 10, "JOB_MAX_BACKOFF_MS": 40}


def run_jobs(broker, worker, *queues: str, timeout: int = 60_000, fail_fast: bool = False) -> None:
    """Start worker if it has not started, wait until queues (default: "default") are empty and every
    message taken is done, then expire the session so that rows read next are the jobs' results.

    fail_fast raises the error of a message that died rather than waiting on; timeout is in ms."""
    if not worker.consumers:
        worker.start()
    for name in queues or ("default",):
        broker.join(name, timeout=timeout, fail_fast=fail_fast)
    worker.join()
    if flask.has_app_context():
        db.session.expire_all()


def stop_worker(broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
    """edcrm's stop_worker, with every thread of worker told to stop at once. Worker.stop() stops its
    worker threads, waits for them (each wakes within worker_timeout), then does the same for its
    consumer threads: two waits of up to worker_timeout each. At a test's end there is no work left for
    the consumers to feed and the StubBroker has no heartbeat to keep, so one wait is enough."""
    for thread in (*worker.workers, *worker.consumers.values()):
        thread.stop()
    stop_embedded_worker(broker, worker)


def stop_embedded(embedded: EmbeddedWorkers) -> None:
    """embedded.stop(), with the threads of all its workers told to stop at once: it stops its workers
    one after the other, each in two waits of up to their worker_timeout (250 ms)."""
    for worker in embedded.workers:
        for thread in (*worker.workers, *worker.consumers.values()):
            thread.stop()
    embedded.stop()


#: How many times api_jobs_flaky ran, by key (emptied before each test that uses it).
outcomes: dict[str, int] = {}


@actor(queue_name="default")
def api_jobs_flaky(key: str, failures: int) -> None:
    """Fails `failures` times, then succeeds."""
    outcomes[key] = outcomes.get(key, 0) + 1
    if outcomes[key] <= failures:
        raise RuntimeError(f"flaky failure {outcomes[key]} of {key}")


def send(branch_id, key="k", failures=0, queue_name=None):
    """A job of branch_id (the way imports and recordings file theirs: a branch_id message option)."""
    options = {"branch_id": branch_id}
    if queue_name:
        message = api_jobs_flaky.message_with_options(args=(key, failures), **options)
        message = message.copy(queue_name=queue_name)
        api_jobs_flaky.broker.declare_queue(queue_name)
        api_jobs_flaky.broker.enqueue(message)
        return message.message_id
    return api_jobs_flaky.send_with_options(args=(key, failures), **options).message_id
