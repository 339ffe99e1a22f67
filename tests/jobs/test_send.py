"""jobs.send: after the caller's transaction commits, and nothing kept when the broker refuses it;
what a job serves is on its row from the moment it is sent."""

from __future__ import annotations

import pytest
import redis
import sqlalchemy as sa

from edcrm import jobs
from edcrm.extensions import db
from edcrm.jobs import Subject
from edcrm.models import Branch, Job, JobState

seen: list[int] = []


@jobs.actor(serves="probe")
def jobs_send_probe(record_id: int) -> None:
    seen.append(record_id)


@jobs.actor()
def jobs_send_probe_exhausted(message: dict, retry_info: dict) -> None:
    pass


@jobs.actor(serves="probe", on_retry_exhausted=jobs_send_probe_exhausted.actor_name)
def jobs_send_failing_probe(record_id: int) -> None:
    raise RuntimeError("always")


@pytest.fixture(autouse=True)
def _reset():
    seen.clear()


def committed_branches(app) -> list[str]:
    """The branch names another connection sees: only what was committed."""
    engine = sa.create_engine(app.config["SQLALCHEMY_DATABASE_URI"])
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text("SELECT name FROM branches")).scalars())
    finally:
        engine.dispose()


def refuse(broker, monkeypatch) -> None:
    def down(message, *, delay=None):
        broker.emit_before("enqueue", message, delay)  # the ledger writes its row, as on Redis
        raise redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6390.")

    monkeypatch.setattr(broker, "enqueue", down)


def test_the_job_is_sent_only_once_the_transaction_committed(app, stub_broker, monkeypatch):
    sent = []
    real_enqueue = stub_broker.enqueue

    def enqueue(message, *, delay=None):
        sent.append((message.message_id, committed_branches(app)))
        return real_enqueue(message, delay=delay)

    monkeypatch.setattr(stub_broker, "enqueue", enqueue)
    with app.app_context():
        db.session.add(Branch(name="Kochi"))
        job_id = jobs.send(jobs_send_probe, 1)
    assert sent == [(job_id, ["Kochi"])]


def test_a_refused_send_keeps_nothing_and_runs_the_undo(app, stub_broker, monkeypatch):
    refuse(stub_broker, monkeypatch)
    with app.app_context():
        branch = Branch(name="Kochi")
        db.session.add(branch)
        db.session.flush()
        with pytest.raises(jobs.BrokerUnavailable) as refused:
            jobs.send(jobs_send_probe.actor_name, branch.id, undo=lambda: db.session.delete(branch))
        assert isinstance(refused.value.__cause__, redis.exceptions.ConnectionError)
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Job)) == 0
    assert committed_branches(app) == []


def test_the_caller_may_name_the_job_and_its_branch(app, stub_broker):
    with app.app_context():
        branch = Branch(name="Kochi")
        db.session.add(branch)
        db.session.commit()
        job_id = jobs.new_job_id()
        assert jobs.send("jobs_send_probe", 5, branch_id=branch.id, job_id=job_id) == job_id
        assert db.session.get(Job, job_id).branch_id == branch.id


def test_what_a_job_serves_is_on_its_row_at_enqueue(app, stub_broker):
    with app.app_context():
        by_option = jobs.send(jobs_send_probe, 7)
        by_sender = jobs.send(jobs_send_probe, 8, serves=Subject("recording_upload", "a1b2"))
        rows = {job.id: job for job in db.session.scalars(sa.select(Job))}
        assert (rows[by_option].state, rows[by_option].serves_kind, rows[by_option].serves_id) == (
            JobState.ENQUEUED,
            "probe",
            7,
        )
        assert (rows[by_sender].serves_kind, rows[by_sender].serves_id) == ("recording_upload", "a1b2")
        assert jobs.subjects.subject_of(rows[by_option]) == Subject("probe", 7)


def test_a_retry_exhausted_callback_serves_what_its_message_served(app, stub_broker, stub_worker):
    with app.app_context():
        job_id = jobs.send(jobs_send_failing_probe, 9)
        for queue in ("default",) * 2:  # the job, then its callback
            stub_broker.join(queue, fail_fast=False)
            stub_worker.join()
        db.session.expire_all()
        callback = db.session.scalar(sa.select(Job).where(Job.actor == jobs_send_probe_exhausted.actor_name))
        assert db.session.get(Job, job_id).state is JobState.FAILED
        assert (callback.serves_kind, callback.serves_id) == ("probe", 9)
