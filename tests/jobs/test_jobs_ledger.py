"""The job ledger's states, driven through the real middleware on the StubBroker with a worker."""

from __future__ import annotations

import time
from contextlib import contextmanager
from datetime import timedelta

import dramatiq
import pytest
import sqlalchemy as sa

from edcrm.actors.maintenance import ping, prune_jobs
from edcrm.extensions import db
from edcrm.jobs import JobNotFound, JobStateConflict, Unrecoverable, actor, ledger, records
from edcrm.models import Job, JobError, JobState
from edcrm.models.types import utcnow
from tests.support.jobs import run_jobs, stop_worker

# Test actors, declared like the application's own (same decorator, same broker).
calls: dict[str, int] = {}
broken = {"flag": True}


@actor()
def flaky(key: str, failures: int) -> None:
    """Fails `failures` times, then succeeds."""
    calls[key] = calls.get(key, 0) + 1
    if calls[key] <= failures:
        raise RuntimeError(f"flaky failure {calls[key]}")


@actor()
def gone(resource_id: int) -> None:
    raise Unrecoverable(f"resource {resource_id} is gone")


@actor()
def fragile() -> None:
    calls["fragile"] = calls.get("fragile", 0) + 1
    if broken["flag"]:
        raise RuntimeError("still broken")


@pytest.fixture(autouse=True)
def _reset():
    calls.clear()
    broken["flag"] = True


def job(job_id: str) -> Job:
    db.session.expire_all()
    return db.session.get(Job, job_id)


def wait_for_state(job_id: str, state: JobState, timeout: float = 5.0) -> Job:
    deadline = time.monotonic() + timeout
    while (row := job(job_id)) is None or row.state is not state:
        assert time.monotonic() < deadline, f"job stayed {row and row.state}, expected {state}"
        time.sleep(0.01)
    return row


@contextmanager
def worker_on(broker):
    worker = dramatiq.Worker(broker, worker_timeout=50)
    worker.start()
    try:
        yield worker
    finally:
        stop_worker(broker, worker)


def test_a_send_is_recorded_enqueued_before_any_worker_runs(app, stub_broker):
    with app.app_context():
        message = ping.send()
        row = job(message.message_id)
        assert row.state is JobState.ENQUEUED
        assert (row.actor, row.queue, row.args, row.kwargs) == ("ping", "default", [], {})
        assert row.attempts == 0 and row.max_retries == 3


def test_success(app, stub_broker, stub_worker):
    with app.app_context():
        message = ping.send()
        run_jobs(stub_broker, stub_worker)
        row = job(message.message_id)
        assert row.state is JobState.SUCCEEDED
        assert row.attempts == 1
        assert row.errors == []
        assert row.enqueued_at <= row.started_at <= row.finished_at


def test_fail_then_succeed_keeps_the_error_of_the_failed_attempt(app, stub_broker, stub_worker):
    with app.app_context():
        message = flaky.send("a", 1)
        run_jobs(stub_broker, stub_worker)
        row = job(message.message_id)
        assert row.state is JobState.SUCCEEDED
        assert row.attempts == 2
        assert [(e.attempt, e.error) for e in row.errors] == [(1, "RuntimeError: flaky failure 1")]
        assert "Traceback" in row.errors[0].traceback and "flaky failure 1" in row.errors[0].traceback


def test_exhausted_retries_end_failed_after_one_plus_three_attempts(app, stub_broker, stub_worker):
    with app.app_context():
        message = ping.send(fail=True)
        run_jobs(stub_broker, stub_worker)
        row = job(message.message_id)
        assert row.state is JobState.FAILED
        assert row.attempts == 4
        assert [e.attempt for e in row.errors] == [1, 2, 3, 4]
        assert all(e.error == "PingFailure: ping asked to fail" for e in row.errors)
        assert row.finished_at is not None


def test_unrecoverable_is_cancelled_on_the_first_attempt(app, stub_broker, stub_worker):
    with app.app_context():
        message = gone.send(42)
        run_jobs(stub_broker, stub_worker)
        row = job(message.message_id)
        assert row.state is JobState.CANCELLED
        assert row.attempts == 1
        assert [e.error for e in row.errors] == ["Unrecoverable: resource 42 is gone"]


def test_cancel_before_it_runs(app, stub_broker):
    with app.app_context():
        message = flaky.send("never", 0)
        assert ledger.cancel(message.message_id).state is JobState.CANCELLED
        with worker_on(stub_broker) as worker:
            run_jobs(stub_broker, worker)
        row = job(message.message_id)
        assert row.state is JobState.CANCELLED
        assert row.attempts == 0
        assert "never" not in calls


def test_cancel_of_a_retrying_job_stops_its_retries(app, stub_broker, stub_worker):
    with app.app_context():
        # A long backoff keeps the job in `retrying` after its first failure.
        message = flaky.send_with_options(args=("slow", 5), min_backoff=60_000, max_backoff=60_000)
        row = wait_for_state(message.message_id, JobState.RETRYING)  # the retry waits in the delay queue
        assert row.scheduled_at > utcnow() + timedelta(seconds=30)
        assert ledger.cancel(message.message_id).state is JobState.CANCELLED
        assert calls["slow"] == 1


def test_cancel_and_retry_refuse_the_wrong_states(app, stub_broker, stub_worker):
    with app.app_context():
        message = ping.send()
        run_jobs(stub_broker, stub_worker)
        with pytest.raises(JobStateConflict, match="cannot cancel a succeeded job"):
            ledger.cancel(message.message_id)
        with pytest.raises(JobStateConflict, match="cannot retry a succeeded job"):
            ledger.retry(message.message_id)
        with pytest.raises(JobNotFound):
            ledger.cancel("no-such-job")


def test_manual_retry_of_a_failed_job_runs_it_again_under_the_same_id(app, stub_broker, stub_worker):
    with app.app_context():
        message = fragile.send()
        run_jobs(stub_broker, stub_worker)
        assert job(message.message_id).state is JobState.FAILED

        broken["flag"] = False  # the operator fixed the cause
        assert ledger.retry(message.message_id).state is JobState.ENQUEUED
        run_jobs(stub_broker, stub_worker)
        row = job(message.message_id)
        assert row.state is JobState.SUCCEEDED
        assert row.attempts == 5  # attempts keep counting across the manual retry, as in Oban
        assert len(row.errors) == 4
        assert calls["fragile"] == 5


def test_retry_of_a_cancelled_job_whose_message_is_still_queued_runs_it_once(app, stub_broker):
    with app.app_context():
        message = flaky.send("twice?", 0)
        ledger.cancel(message.message_id)
        ledger.retry(
            message.message_id
        )  # the cancelled message is still in the queue, and a new one joins it
        with worker_on(stub_broker) as worker:
            run_jobs(stub_broker, worker)
        assert calls["twice?"] == 1
        assert job(message.message_id).state is JobState.SUCCEEDED


def test_a_duplicate_delivery_of_a_finished_job_is_skipped(app, stub_broker, stub_worker):
    with app.app_context():
        message = flaky.send("once", 0)
        run_jobs(stub_broker, stub_worker)
        stub_broker.enqueue(message)  # the broker delivers the same message again (at-least-once)
        run_jobs(stub_broker, stub_worker)
        assert calls["once"] == 1
        assert job(message.message_id).attempts == 1


def test_a_late_write_of_an_old_attempt_never_moves_the_job_backwards(app, stub_broker):
    with app.app_context():
        engine = db.engine
        message = ping.message()
        message.options[records.TOKEN] = records.new_token()
        records.record_enqueued(engine, message, max_retries=3, delay_ms=None)
        assert records.claim(engine, message, max_retries=3) == 1
        # The worker of attempt 1 died; the broker redelivered the message, and attempt 2 is running.
        assert records.claim(engine, message, max_retries=3) == 2
        # Attempt 1's outcome arrives late: its error is kept, but the job stays running.
        records.record_finished(engine, message, attempt=1, state=JobState.FAILED, error="late")
        records.record_retry_scheduled(engine, message, attempt=1, delay_ms=1000)
        row = job(message.message_id)
        assert (row.state, row.attempts) == (JobState.RUNNING, 2)
        assert [e.error for e in row.errors] == ["late"]
        # A first-send write arriving late does not reset it either.
        records.record_enqueued(engine, message, max_retries=3, delay_ms=None)
        assert job(message.message_id).state is JobState.RUNNING


def test_a_message_with_a_stale_token_is_skipped(app, stub_broker):
    with app.app_context():
        engine = db.engine
        message = ping.message()
        message.options[records.TOKEN] = "old"
        records.record_enqueued(engine, message, max_retries=3, delay_ms=None)
        db.session.execute(sa.update(Job).where(Job.id == message.message_id).values(token="new"))
        db.session.commit()
        assert records.claim(engine, message, max_retries=3) is None


def test_a_message_sent_without_the_ledger_is_recorded_when_it_runs(app, stub_broker):
    with app.app_context():
        message = ping.message()
        # Looks like a re-send: no row is written at enqueue.
        message.options[records.TOKEN] = "from-elsewhere"
        stub_broker.enqueue(message)
        assert job(message.message_id) is None
        with worker_on(stub_broker) as worker:
            run_jobs(stub_broker, worker)
        row = job(message.message_id)
        assert (row.state, row.attempts) == (JobState.SUCCEEDED, 1)


def test_pending_jobs_are_sent_again_after_a_restart(app, stub_broker):
    with app.app_context():
        left = [flaky.send(f"left-{n}", 0).message_id for n in range(3)]
        stub_broker.flush_all()  # the in-memory broker died with the previous process
        assert sorted(ledger.resend_pending(stub_broker)) == sorted(left)
        with worker_on(stub_broker) as worker:
            run_jobs(stub_broker, worker)
        assert all(job(job_id).state is JobState.SUCCEEDED for job_id in left)
        assert sorted(calls) == sorted(f"left-{n}" for n in range(3))


def test_a_periodic_run_that_comes_too_late_is_cancelled_with_a_reason(app, stub_broker, stub_worker):
    with app.app_context():
        late = (utcnow() - timedelta(hours=1)).isoformat()
        message = prune_jobs.send_with_options(scheduled_at=late)
        run_jobs(stub_broker, stub_worker)
        row = job(message.message_id)
        assert row.state is JobState.CANCELLED
        assert [e.error for e in row.errors] == ["Skipped: the message came too late to run"]


def _finished_job(job_id: str, state: JobState, days_ago: float) -> Job:
    when = utcnow() - timedelta(days=days_ago)
    row = Job(id=job_id, actor="ping", queue="default", state=state, enqueued_at=when, finished_at=when)
    row.errors.append(JobError(attempt=1, error="boom"))
    return row


def test_prune_keeps_failures_longer_than_successes(app):
    with app.app_context():
        db.session.add_all(
            [
                _finished_job("new-ok", JobState.SUCCEEDED, 1),
                _finished_job("old-ok", JobState.SUCCEEDED, 8),
                _finished_job("old-cancelled", JobState.CANCELLED, 8),
                _finished_job("week-old-failure", JobState.FAILED, 8),
                _finished_job("ancient-failure", JobState.FAILED, 31),
                Job(
                    id="waiting",
                    actor="ping",
                    queue="default",
                    state=JobState.ENQUEUED,
                    enqueued_at=utcnow() - timedelta(days=90),
                ),
            ]
        )
        db.session.commit()
        assert ledger.prune(retention_days=7, failed_retention_days=30, batch_size=1) == 3
        remaining = set(db.session.execute(sa.select(Job.id)).scalars())
        assert remaining == {"new-ok", "week-old-failure", "waiting"}
        assert db.session.execute(sa.select(sa.func.count()).select_from(JobError)).scalar() == 2


def test_the_pruner_actor_uses_the_configured_retention(app, stub_broker, stub_worker):
    app.config.update(JOB_RETENTION_DAYS=2, FAILED_JOB_RETENTION_DAYS=3)
    with app.app_context():
        db.session.add_all(
            [
                _finished_job("3-days-ok", JobState.SUCCEEDED, 3),
                _finished_job("2-days-failed", JobState.FAILED, 2),
            ]
        )
        db.session.commit()
        message = prune_jobs.send()
        run_jobs(stub_broker, stub_worker)
        assert job(message.message_id).state is JobState.SUCCEEDED
        assert job("3-days-ok") is None
        assert job("2-days-failed") is not None


def test_every_actor_retries_three_times_and_has_a_time_limit(stub_broker):
    for declared in stub_broker.actors.values():
        assert declared.options["max_retries"] == 3, declared.actor_name
        assert declared.options["time_limit"] > 0, declared.actor_name
        assert Unrecoverable in declared.options["throws"], declared.actor_name


def test_a_message_is_retried_not_run_while_the_ledger_cannot_claim_it(
    app, stub_broker, stub_worker, monkeypatch
):
    real_claim, outages = records.claim, []

    def claim_during_an_outage(*args, **kwargs):
        if not outages:
            outages.append(1)
            raise sa.exc.OperationalError("UPDATE jobs ...", {}, ConnectionRefusedError("database down"))
        return real_claim(*args, **kwargs)

    monkeypatch.setattr(records, "claim", claim_during_an_outage)
    with app.app_context():
        message = flaky.send("outage", 0)
        run_jobs(stub_broker, stub_worker)
        row = job(message.message_id)
        # The delivery during the outage did not run the actor; its retry did, once, on the record.
        assert calls["outage"] == 1
        assert (row.state, row.attempts, row.retries) == (JobState.SUCCEEDED, 1, 1)
