"""The jobs API (admins): list with filters, counts and pages; show; retry; cancel; retry all failed;
each scoped to the admin's branch. Jobs go through the real ledger middleware on the StubBroker."""

from __future__ import annotations

import io

import dramatiq
import pytest

from edcrm.actors.maintenance import ping
from edcrm.extensions import db
from edcrm.models import ImportStatus, Job, JobState, LeadImport, Role
from edcrm.recordings import uploads
from tests.support.audio_samples import wav
from tests.support.imports import SAMPLE_CSV, post_import, stored_files
from tests.support.jobs import outcomes, run_jobs, send, stop_worker
from tests.support.openapi import check
from tests.support.people import bearer, make_user
from tests.support.recordings import make_call_log


@pytest.fixture(autouse=True)
def _reset():
    outcomes.clear()


def listed(client, user, **params):
    response = client.get("/api/jobs", query_string=params, headers=bearer(user))
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def test_only_admins_with_a_token_reach_the_jobs(client, admin, telecaller, stub_broker):
    job_id = send(admin.branch_id)
    assert client.get("/api/jobs").status_code == 401
    assert client.get("/api/jobs", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/api/jobs", headers=bearer(telecaller)).status_code == 403
    for method, path in [
        ("get", f"/api/jobs/{job_id}"),
        ("post", f"/api/jobs/{job_id}/retry"),
        ("post", f"/api/jobs/{job_id}/cancel"),
        ("post", "/api/jobs/retry-failed"),
    ]:
        assert getattr(client, method)(path, headers=bearer(telecaller)).status_code == 403, path
    assert db.session.get(Job, job_id).state is JobState.ENQUEUED  # the telecaller's cancel did nothing


def test_an_admin_sees_their_branchs_jobs_and_the_systems_never_another_branchs(
    client, admin, other_branch, stub_broker
):
    mine, theirs = send(admin.branch_id, "mine"), send(other_branch.id, "theirs")
    system = ping.send().message_id
    body = listed(client, admin)
    assert {item["id"] for item in body["items"]} == {mine, system}
    assert body["counts"]["enqueued"] == 2
    assert client.get(f"/api/jobs/{mine}", headers=bearer(admin)).get_json()["branch_id"] == admin.branch_id

    for method, path in [
        ("get", f"/api/jobs/{theirs}"),
        ("post", f"/api/jobs/{theirs}/retry"),
        ("post", f"/api/jobs/{theirs}/cancel"),
    ]:
        response = getattr(client, method)(path, headers=bearer(admin))
        assert response.status_code == 403, path
    assert db.session.get(Job, theirs).state is JobState.ENQUEUED

    their_admin = make_user(other_branch, Role.ADMIN)
    assert {item["id"] for item in listed(client, their_admin)["items"]} == {theirs, system}


@pytest.fixture
def default_worker(stub_broker):
    """A worker of the default queue only: jobs of other queues stay enqueued."""
    worker = dramatiq.Worker(stub_broker, queues={"default"}, worker_timeout=50)
    worker.start()
    yield worker
    stop_worker(stub_broker, worker)


def test_filters_narrow_the_list_and_the_counts_follow_them(client, admin, stub_broker, default_worker):
    ok, bad = send(admin.branch_id, "ok"), send(admin.branch_id, "bad", failures=10)
    pending = send(admin.branch_id, "later", queue_name="csv_import")
    ping.send()
    run_jobs(stub_broker, default_worker)

    failed = listed(client, admin, state="failed")
    assert [item["id"] for item in failed["items"]] == [bad]
    # Counts per state ignore the state filter (they are the tabs), and include every state.
    assert failed["counts"] == {
        "enqueued": 1,
        "running": 0,
        "retrying": 0,
        "succeeded": 2,
        "failed": 1,
        "cancelled": 0,
    }
    assert failed["queues"] == {"default": 1}  # per queue, within the state filter

    in_queue = listed(client, admin, queue="csv_import")
    assert [item["id"] for item in in_queue["items"]] == [pending]
    assert in_queue["counts"]["enqueued"] == 1 and in_queue["counts"]["succeeded"] == 0
    assert listed(client, admin)["queues"] == {"csv_import": 1, "default": 3}

    by_actor = listed(client, admin, actor="api_jobs_flaky", state="succeeded")
    assert [item["id"] for item in by_actor["items"]] == [ok]


def test_pages_go_newest_first_without_gaps_or_repeats(client, admin, stub_broker):
    sent = [send(admin.branch_id, f"k{n}") for n in range(7)]
    seen, cursor = [], None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        body = listed(client, admin, **params)
        assert len(body["items"]) <= 3
        seen += [item["id"] for item in body["items"]]
        cursor = body["next"]
        if cursor is None:
            break
    assert seen == list(reversed(sent))


@pytest.mark.parametrize(
    ("params", "field"),
    [({"state": "exploded"}, "state"), ({"limit": 0}, "limit"), ({"cursor": "not-ours"}, "cursor")],
)
def test_bad_filters_are_a_422_naming_the_field(client, admin, params, field):
    response = client.get("/api/jobs", query_string=params, headers=bearer(admin))
    assert response.status_code == 422
    assert field in response.get_json()["error"]["fields"]


def test_an_unknown_job_is_a_404(client, admin):
    assert client.get("/api/jobs/no-such-job", headers=bearer(admin)).status_code == 404
    assert client.post(f"/api/jobs/{'x' * 65}/retry", headers=bearer(admin)).status_code == 404


def test_a_failed_job_shows_every_attempts_error_and_a_retry_runs_it_to_success(
    client, admin, stub_broker, stub_worker
):
    job_id = send(admin.branch_id, "four", failures=4)  # 4 attempts fail (1 + 3 retries), the 5th works
    run_jobs(stub_broker, stub_worker)
    job = client.get(f"/api/jobs/{job_id}", headers=bearer(admin)).get_json()
    assert job["state"] == "failed" and job["attempts"] == 4 and job["max_retries"] == 3
    assert [error["attempt"] for error in job["errors"]] == [1, 2, 3, 4]
    assert job["errors"][0]["error"] == "RuntimeError: flaky failure 1 of four"
    assert "Traceback" in job["errors"][0]["traceback"]
    assert job["args"] == ["four", 4] and job["subject"] is None

    response = client.post(f"/api/jobs/{job_id}/retry", headers=bearer(admin))
    assert response.status_code == 202
    assert response.get_json()["state"] == "enqueued"
    run_jobs(stub_broker, stub_worker)
    job = client.get(f"/api/jobs/{job_id}", headers=bearer(admin)).get_json()
    assert job["state"] == "succeeded" and job["attempts"] == 5
    assert outcomes["four"] == 5

    again = client.post(f"/api/jobs/{job_id}/retry", headers=bearer(admin))
    assert again.status_code == 409
    assert again.get_json()["error"]["state"] == "succeeded"


def test_a_cancelled_job_never_runs_and_cannot_be_cancelled_again(client, admin, stub_broker):
    job_id = send(admin.branch_id, "never")  # no worker yet: it waits in the queue
    response = client.post(f"/api/jobs/{job_id}/cancel", headers=bearer(admin))
    assert response.status_code == 202 and response.get_json()["state"] == "cancelled"
    stub_worker = dramatiq.Worker(stub_broker, worker_timeout=50)
    stub_worker.start()
    try:
        run_jobs(stub_broker, stub_worker)
    finally:
        stop_worker(stub_broker, stub_worker)
    assert "never" not in outcomes
    assert db.session.get(Job, job_id).state is JobState.CANCELLED

    refused = client.post(f"/api/jobs/{job_id}/cancel", headers=bearer(admin))
    assert refused.status_code == 409
    assert refused.get_json()["error"]["code"] == "wrong_state"
    assert refused.get_json()["error"]["state"] == "cancelled"


def test_retry_all_failed_retries_the_filters_failed_jobs_only(
    client, admin, other_branch, stub_broker, stub_worker
):
    default_failed = [send(admin.branch_id, f"d{n}", failures=4) for n in range(2)]
    other_queue_failed = send(admin.branch_id, "q", failures=4, queue_name="csv_import")
    theirs = send(other_branch.id, "theirs", failures=4)
    run_jobs(stub_broker, stub_worker, "default", "csv_import")
    assert all(db.session.get(Job, i).state is JobState.FAILED for i in [*default_failed, theirs])

    response = client.post("/api/jobs/retry-failed", json={"queue": "default"}, headers=bearer(admin))
    assert response.status_code == 202
    assert sorted(response.get_json()["job_ids"]) == sorted(default_failed)
    run_jobs(stub_broker, stub_worker, "default", "csv_import")
    assert all(db.session.get(Job, i).state is JobState.SUCCEEDED for i in default_failed)
    assert db.session.get(Job, other_queue_failed).state is JobState.FAILED
    assert db.session.get(Job, theirs).state is JobState.FAILED  # another branch's: untouched

    everything = client.post("/api/jobs/retry-failed", headers=bearer(admin))
    assert everything.get_json()["job_ids"] == [other_queue_failed]


def test_a_retry_while_the_broker_is_down_is_a_503_and_leaves_the_job_failed(
    client, admin, stub_broker, stub_worker, monkeypatch
):
    job_id = send(admin.branch_id, "f", failures=4)
    run_jobs(stub_broker, stub_worker)

    def refuse(message, *, delay=None):
        raise ConnectionError("redis is down")

    monkeypatch.setattr(stub_broker, "enqueue", refuse)
    response = client.post(f"/api/jobs/{job_id}/retry", headers=bearer(admin))
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "queue_unavailable"
    db.session.expire_all()
    assert db.session.get(Job, job_id).state is JobState.FAILED


def test_an_import_files_its_job_under_the_branch_and_links_the_import(
    client,
    admin,
    callers,
    other_branch,
    stub_broker,
    stub_worker,
):
    created = post_import(client, admin, SAMPLE_CSV, [c.id for c in callers]).get_json()
    run_jobs(stub_broker, stub_worker, "csv_import", fail_fast=True)
    job = client.get(f"/api/jobs/{created['job_id']}", headers=bearer(admin)).get_json()
    assert job["actor"] == "import_leads" and job["state"] == "succeeded"
    assert job["branch_id"] == admin.branch_id
    assert job["subject"] == {"kind": "import", "id": created["id"], "url": f"/api/imports/{created['id']}"}
    stranger = make_user(other_branch, Role.ADMIN)
    assert client.get(f"/api/jobs/{created['job_id']}", headers=bearer(stranger)).status_code == 403


def test_the_answers_have_the_documented_shapes(client, admin, stub_broker, stub_worker):
    document = client.get("/api/openapi.json").get_json()
    job_id = send(admin.branch_id, "shape", failures=4)
    run_jobs(stub_broker, stub_worker)
    check(document, "JobList", listed(client, admin))
    check(document, "Job", client.get(f"/api/jobs/{job_id}", headers=bearer(admin)).get_json())
    check(document, "Job", client.post(f"/api/jobs/{job_id}/retry", headers=bearer(admin)).get_json())
    check(document, "RetryReport", client.post("/api/jobs/retry-failed", headers=bearer(admin)).get_json())
    check(document, "Error", client.post(f"/api/jobs/{job_id}/retry", headers=bearer(admin)).get_json())


def test_cancelling_a_recording_job_ends_its_upload_and_a_retry_still_makes_the_recording(
    client, admin, telecaller, stub_broker
):
    """The job is cancelled before any worker ran it: the upload says so at once (it no longer waits
    for a job that will not come), its chunks are kept, and a retry of the job makes the recording."""
    audio = wav(1.0)
    upload = uploads.create_session(
        telecaller, make_call_log(admin.branch, telecaller), filename="call.wav", expected_chunks=2
    )
    half = len(audio) // 2
    for index, part in enumerate((audio[:half], audio[half:])):
        uploads.store_chunk(upload, index, io.BytesIO(part))
    job_id = uploads.complete(upload)
    status = f"/api/recordings/uploads/{upload.id}"
    assert client.get(status, headers=bearer(telecaller)).get_json()["status"] == "processing"

    response = client.post(f"/api/jobs/{job_id}/cancel", headers=bearer(admin))
    assert response.status_code == 202
    seen = client.get(status, headers=bearer(telecaller)).get_json()
    assert (seen["status"], seen["received"], seen["missing"]) == ("cancelled", [0, 1], [])
    assert "administrator cancelled" in seen["error"]

    worker = dramatiq.Worker(stub_broker, worker_timeout=50)
    worker.start()
    try:
        assert client.post(f"/api/jobs/{job_id}/retry", headers=bearer(admin)).status_code == 202
        run_jobs(stub_broker, worker, "recordings")
    finally:
        stop_worker(stub_broker, worker)
    done = client.get(status, headers=bearer(telecaller)).get_json()
    assert (done["status"], done["error"]) == ("completed", None) and done["recording_id"] is not None
    assert db.session.get(Job, job_id).state is JobState.SUCCEEDED


def cancelled_import_job(app, client, admin, telecallers, stub_broker) -> tuple[int, str]:
    """An import whose file went missing before its job ran: import and job end cancelled."""
    created = post_import(client, admin, SAMPLE_CSV, [c.id for c in telecallers]).get_json()
    for path in stored_files(app):
        path.unlink()
    worker = dramatiq.Worker(stub_broker, worker_timeout=50)  # only now: the job must find no file
    worker.start()
    try:
        run_jobs(stub_broker, worker, "csv_import")
    finally:
        stop_worker(stub_broker, worker)
    assert db.session.get(LeadImport, created["id"]).status is ImportStatus.CANCELLED
    assert db.session.get(Job, created["job_id"]).state is JobState.CANCELLED
    return created["id"], created["job_id"]


def test_a_job_whose_retry_could_only_end_cancelled_is_refused_with_the_reason(
    app,
    client,
    admin,
    callers,
    stub_broker,
):
    _, job_id = cancelled_import_job(app, client, admin, callers, stub_broker)
    refused = client.post(f"/api/jobs/{job_id}/retry", headers=bearer(admin))
    assert refused.status_code == 409
    error = refused.get_json()["error"]
    assert (error["code"], error["state"]) == ("not_retryable", "cancelled")
    assert "import is cancelled" in error["message"] and "upload the file again" in error["message"]
    check(client.get("/api/openapi.json").get_json(), "Error", refused.get_json())
    db.session.expire_all()
    assert db.session.get(Job, job_id).state is JobState.CANCELLED  # not sent again
    assert client.post("/api/jobs/retry-failed", headers=bearer(admin)).get_json()["job_ids"] == []


def test_cancelling_an_imports_job_ends_the_import_and_deletes_its_file(
    app,
    client,
    admin,
    callers,
    stub_broker,
):
    """Cancelled before a worker ran it: the import says so at once (never `queued` forever), its file
    goes once the cancel has committed, the job's message is skipped, and a retry is refused."""
    created = post_import(client, admin, SAMPLE_CSV, [c.id for c in callers]).get_json()
    assert stored_files(app)

    response = client.post(f"/api/jobs/{created['job_id']}/cancel", headers=bearer(admin))

    assert response.status_code == 202
    shown = client.get(f"/api/imports/{created['id']}", headers=bearer(admin)).get_json()
    assert shown["status"] == "cancelled" and "administrator cancelled" in shown["error"]
    assert stored_files(app) == []
    worker = dramatiq.Worker(stub_broker, worker_timeout=50)
    worker.start()
    try:
        run_jobs(stub_broker, worker, "csv_import")
    finally:
        stop_worker(stub_broker, worker)
    assert db.session.get(LeadImport, created["id"]).successful_rows == 0  # its message was skipped
    refused = client.post(f"/api/jobs/{created['job_id']}/retry", headers=bearer(admin))
    assert refused.status_code == 409 and refused.get_json()["error"]["code"] == "not_retryable"
