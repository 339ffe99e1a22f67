"""The jobs pages (admins): the list with state tabs, filters and pages; a job with its errors and the
import it serves; the retry, cancel and retry-all-failed buttons (CSRF-protected POSTs).

Like tests/routes/web/test_pages.py, no application context stays open between requests."""

from __future__ import annotations

import html
import io
import re
from types import SimpleNamespace

import dramatiq
import pytest
import sqlalchemy as sa

from edcrm.extensions import db
from edcrm.imports.upload import start_import
from edcrm.models import Branch, Job, JobState, Recording, Role, User
from edcrm.recordings import uploads
from edcrm.storage import get_storage
from tests.support.audio_samples import wav
from tests.support.imports import SAMPLE_CSV
from tests.support.jobs import outcomes, run_jobs, send, stop_worker
from tests.support.pages import csrf_token
from tests.support.people import PASSWORD, make_user, signed_in
from tests.support.recordings import make_call_log


@pytest.fixture(autouse=True)
def _reset():
    outcomes.clear()


@pytest.fixture
def people(app):
    """Kochi: an admin and a telecaller; Thrissur: an admin. Ids only: no context stays open."""
    with app.app_context():
        kochi, thrissur = Branch(name="Kochi"), Branch(name="Thrissur")
        db.session.add_all([kochi, thrissur])
        db.session.commit()
        admin = make_user(kochi, Role.ADMIN, email="admin@kochi.test")
        make_user(kochi, Role.TELECALLER, email="caller@kochi.test")
        make_user(thrissur, Role.ADMIN, email="admin@thrissur.test")
        return SimpleNamespace(kochi=kochi.id, thrissur=thrissur.id, admin=admin.id)


def text(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def state_of(app, job_id) -> JobState:
    with app.app_context():
        return db.session.get(Job, job_id).state


def rows(page: str) -> list[str]:
    """The job ids of the list's rows, in order."""
    return re.findall(r'<tr data-job-id="([^"]+)"', page)


@pytest.fixture
def failed_and_done(app, people, stub_broker, stub_worker):
    """Kochi: a job that failed its 4 attempts and one that succeeded; Thrissur: a failed one."""
    with app.app_context():
        failed = send(people.kochi, "bad", failures=4)
        done = send(people.kochi, "good")
        theirs = send(people.thrissur, "theirs", failures=4)
        run_jobs(stub_broker, stub_worker)
    return SimpleNamespace(failed=failed, done=done, theirs=theirs)


def test_telecallers_are_refused_and_visitors_sent_to_sign_in(app, client, people):
    assert client.get("/jobs").headers["Location"].startswith("/login")
    signed_in(client, "caller@kochi.test")
    assert client.get("/jobs").status_code == 403
    assert "admin role" in text(client.get("/jobs"))


def test_an_empty_ledger_says_so(client, people):
    page = text(signed_in(client, "admin@kochi.test").get("/jobs"))
    assert "No jobs yet." in page


def test_the_list_shows_the_branchs_jobs_with_counts_per_state_and_queue(
    app, client, people, failed_and_done
):
    page = text(signed_in(client, "admin@kochi.test").get("/jobs"))
    assert rows(page) == [failed_and_done.done, failed_and_done.failed]  # newest first; not Thrissur's
    assert re.search(r"failed <span class=\"count\">1</span>", page)
    assert re.search(r"succeeded <span class=\"count\">1</span>", page)
    assert 'default <span class="count">2</span>' in page
    assert "Retry all failed (1)" in page

    failed_only = text(client.get("/jobs?state=failed"))
    assert rows(failed_only) == [failed_and_done.failed]
    assert "flaky failure" not in failed_only  # errors are on the job's page, not the list
    assert rows(text(client.get("/jobs?queue=csv_import"))) == []
    assert "No job matches these filters." in text(client.get("/jobs?queue=csv_import"))
    # A hand-edited filter that means nothing is ignored, not an error.
    assert rows(text(client.get("/jobs?state=exploded"))) == rows(page)


def test_the_list_pages_through_older_jobs(app, client, people, stub_broker, monkeypatch):
    monkeypatch.setattr("edcrm.routes.web.jobs.PAGE_SIZE", 2)
    with app.app_context():
        sent = [send(people.kochi, f"k{n}") for n in range(5)]
    signed_in(client, "admin@kochi.test")
    seen, url = [], "/jobs"
    while url:
        page = text(client.get(url))
        seen += rows(page)
        older = re.search(r'<a href="([^"]+)">Older →</a>', page)
        url = older.group(1) if older else None
    assert seen == list(reversed(sent))


def test_a_jobs_page_shows_each_error_with_its_traceback(app, client, people, failed_and_done):
    page = text(signed_in(client, "admin@kochi.test").get(f"/jobs/{failed_and_done.failed}"))
    assert re.search(r"<dt>Attempts</dt><dd>4\s", page) and "up to 4 a run" in page
    for attempt in range(1, 5):
        assert f"RuntimeError: flaky failure {attempt} of bad" in page
    assert page.count("Traceback (most recent call last)") == 4
    assert '"bad"' in page and ">Retry</button>" in page
    assert client.get(f"/jobs/{failed_and_done.theirs}").status_code == 403
    assert client.get("/jobs/no-such-job").status_code == 404


def test_retry_sends_the_job_again_and_it_succeeds(
    app, client, people, failed_and_done, stub_broker, stub_worker
):
    signed_in(client, "admin@kochi.test")
    response = client.post(f"/jobs/{failed_and_done.failed}/retry", data={"next": "/jobs?state=failed"})
    assert response.status_code == 302 and response.headers["Location"] == "/jobs?state=failed"
    assert "is queued again" in text(client.get("/jobs"))
    with app.app_context():
        run_jobs(stub_broker, stub_worker)
    assert state_of(app, failed_and_done.failed) is JobState.SUCCEEDED
    assert outcomes["bad"] == 5

    refused = client.post(f"/jobs/{failed_and_done.done}/retry", follow_redirects=True)
    assert "Not retried: cannot retry a succeeded job" in text(refused)
    assert client.post(f"/jobs/{failed_and_done.theirs}/retry").status_code == 403
    assert state_of(app, failed_and_done.theirs) is JobState.FAILED


def test_cancel_stops_a_waiting_job(app, client, people, stub_broker):
    with app.app_context():
        waiting = send(people.kochi, "waits")  # no worker: it stays enqueued
    signed_in(client, "admin@kochi.test")
    assert ">Cancel</button>" in text(client.get(f"/jobs/{waiting}"))
    page = text(client.post(f"/jobs/{waiting}/cancel", follow_redirects=True))
    assert "is cancelled" in page
    assert state_of(app, waiting) is JobState.CANCELLED


def test_retry_all_failed_retries_the_filtered_failures_of_the_branch_only(
    app, client, people, failed_and_done, stub_broker, stub_worker
):
    signed_in(client, "admin@kochi.test")
    response = client.post("/jobs/retry-failed", data={"queue": "default"})
    assert response.headers["Location"] == "/jobs?queue=default"
    assert "1 failed job(s) queued again." in text(client.get("/jobs"))
    with app.app_context():
        run_jobs(stub_broker, stub_worker)
    assert state_of(app, failed_and_done.failed) is JobState.SUCCEEDED
    assert state_of(app, failed_and_done.theirs) is JobState.FAILED


def test_the_buttons_need_the_csrf_token(csrf_app):
    with csrf_app.app_context():
        make_user(Branch.get_or_create("Kochi"), Role.ADMIN, email="admin@kochi.test")
        job_id = send(Branch.get_or_create("Kochi").id, "waits")
    client = csrf_app.test_client()
    login_page = client.get("/login")
    credentials = {"email": "admin@kochi.test", "password": PASSWORD}
    client.post("/login", data={**credentials, "csrf_token": csrf_token(login_page.get_data(as_text=True))})
    assert client.post(f"/jobs/{job_id}/cancel").status_code == 400
    assert state_of(csrf_app, job_id) is JobState.ENQUEUED
    token = csrf_token(client.get(f"/jobs/{job_id}").get_data(as_text=True))
    assert client.post(f"/jobs/{job_id}/cancel", data={"csrf_token": token}).status_code == 302
    assert state_of(csrf_app, job_id) is JobState.CANCELLED


def test_an_imports_job_links_to_the_import(app, client, people, stub_broker, stub_worker):
    with app.app_context():
        admin = db.session.get(User, people.admin)
        caller = make_user(admin.branch, Role.TELECALLER)
        lead_import = start_import(admin, io.BytesIO(SAMPLE_CSV), "leads.csv", [caller.id])
        import_id, job_id = lead_import.id, lead_import.job_id
        stub_broker.join("csv_import")
        stub_worker.join()
    page = text(signed_in(client, "admin@kochi.test").get(f"/jobs/{job_id}"))
    assert f'<a href="/imports/{import_id}">Import #{import_id}</a>' in page
    assert "leads.csv: completed" in page
    assert f'<a href="/imports/{import_id}">Import #{import_id}</a>' in text(client.get("/jobs"))


def test_a_recordings_job_links_to_the_recording_it_made(app, client, people, stub_broker, stub_worker):
    audio = wav(0.5)
    with app.app_context():
        kochi = db.session.get(Branch, people.kochi)
        caller = make_user(kochi, Role.TELECALLER, email="recorder@kochi.test")
        call_log = make_call_log(kochi, caller)
        job_id = uploads.start_single_upload(caller, call_log, io.BytesIO(audio), "call.wav")
        stub_broker.join("recordings")
        stub_worker.join()
        recording_id = db.session.execute(sa.select(Recording.id)).scalar_one()

    page = text(signed_in(client, "admin@kochi.test").get(f"/jobs/{job_id}"))
    assert f'<a href="/recordings/{recording_id}">Recording #{recording_id}</a>' in page
    assert "of call.wav, completed, for call" in page and "recorder@kochi.test" in page
    assert client.get(f"/recordings/{recording_id}").data == audio
    client.post("/logout")
    signed_in(client, "recorder@kochi.test")
    assert client.get(f"/recordings/{recording_id}").data == audio  # the telecaller who made it
    client.post("/logout")
    signed_in(client, "admin@thrissur.test")
    assert client.get(f"/recordings/{recording_id}").status_code == 403
    assert client.get("/recordings/999999").status_code == 404


def test_a_job_whose_retry_could_only_end_cancelled_offers_no_retry_and_says_why(
    app, client, people, stub_broker
):
    """A cancelled import's file is deleted: its job could only end "already cancelled" again."""
    with app.app_context():
        admin = db.session.get(User, people.admin)
        caller = make_user(admin.branch, Role.TELECALLER)
        lead_import = start_import(admin, io.BytesIO(SAMPLE_CSV), "leads.csv", [caller.id])
        job_id = lead_import.job_id
        # The file goes missing before any worker runs the job: the import is cancelled.
        get_storage().delete(lead_import.storage_key)
        worker = dramatiq.Worker(stub_broker, worker_timeout=50)
        worker.start()
        try:
            run_jobs(stub_broker, worker, "csv_import")
        finally:
            stop_worker(stub_broker, worker)
    assert state_of(app, job_id) is JobState.CANCELLED

    page = text(signed_in(client, "admin@kochi.test").get(f"/jobs/{job_id}"))
    assert ">Retry</button>" not in page
    assert "Retry is not offered: The import is cancelled and its file was deleted" in page
    listed = text(client.get("/jobs"))
    assert "Not retryable" in listed and f'action="/jobs/{job_id}/retry"' not in listed
    refused = text(client.post(f"/jobs/{job_id}/retry", follow_redirects=True))
    assert "Not retried: The import is cancelled" in refused
    assert state_of(app, job_id) is JobState.CANCELLED
