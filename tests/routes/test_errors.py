"""edcrm.routes.errors: every family of domain refusals (import rejected, upload rejected, job state
conflict, dependency unavailable) is answered by one table, as the API's JSON and as a page."""

from __future__ import annotations

import io
import re
import uuid
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from edcrm.extensions import db
from edcrm.imports import upload as imports
from edcrm.jobs import BrokerUnavailable, JobNotFound, JobStateConflict, RetryRefused
from edcrm.models import Job, JobState, LeadImport
from edcrm.models.job import CANCELLABLE
from edcrm.recordings import errors as uploads
from edcrm.routes.errors import answer_of
from edcrm.routes.outages import RETRY_AFTER_S

PASSWORD = "secret-password"  # the people fixtures' password


def _job(state: JobState) -> Job:
    return Job(id=uuid.uuid4().hex, actor="ping", queue="default", state=state)


#: (a refusal, the status, the code, what the JSON shows beside the message).
REFUSALS: list[tuple[Callable[[], Exception], int, str, dict]] = [
    (lambda: imports.InvalidTelecallers("7 is not a telecaller here.", [7]), 422, "invalid_telecallers",
     {"telecaller_ids": [7]}),
    (lambda: imports.NoTelecallers("Choose at least one telecaller."), 422, "no_telecallers", {}),
    (lambda: imports.EmptyFile("The file is empty."), 422, "empty_file", {}),
    (lambda: imports.FileTooLarge(1024), 413, "file_too_large", {}),
    (lambda: imports.NotCsvFile("The file is not CSV text."), 415, "not_csv", {}),
    (lambda: uploads.InvalidUpload("Chunk 3 is empty."), 422, "invalid_upload", {}),
    (lambda: uploads.TooLarge("The chunk is too large.", limit=5), 413, "too_large", {"limit": 5}),
    (lambda: uploads.ChecksumMismatch("Chunk 0 does not match.", index=0), 422, "checksum_mismatch",
     {"index": 0}),
    (lambda: uploads.WrongState("The upload is processing."), 409, "upload_state_conflict", {}),
    (lambda: uploads.ChunksMissing("2 chunk(s) have not arrived yet.", missing=[1, 3]), 409,
     "chunks_missing", {"missing": [1, 3]}),
    (lambda: JobNotFound("abc"), 404, "not_found", {}),
    (lambda: JobStateConflict(_job(JobState.SUCCEEDED), "cancel", CANCELLABLE), 409, "wrong_state",
     {"state": "succeeded"}),
    (lambda: RetryRefused(_job(JobState.CANCELLED), "The import is gone."), 409, "not_retryable",
     {"state": "cancelled"}),
    (lambda: BrokerUnavailable("The job queue cannot be reached."), 503, "queue_unavailable", {}),
    (lambda: imports.QueueUnavailable("The job queue could not be reached."), 503, "queue_unavailable", {}),
    (lambda: uploads.QueueUnavailable("The job queue is unavailable."), 503, "queue_unavailable", {}),
]  # fmt: skip
IDS = [
    "invalid_telecallers", "no_telecallers", "empty_file", "file_too_large", "not_csv",
    "invalid_upload", "too_large", "checksum_mismatch", "upload_state_conflict", "chunks_missing",
    "job_not_found", "wrong_state", "not_retryable",
    "broker_unavailable", "import_queue_unavailable", "upload_queue_unavailable",
]  # fmt: skip


def message_of(error: Exception) -> str:
    """What the client reads: the error's own words (a job id alone would say nothing)."""
    return f"No job {error}." if isinstance(error, JobNotFound) else str(error)


def raising(app, path: str, make: Callable[[], Exception]) -> None:
    def refused():
        raise make()

    app.add_url_rule(path, "refused", refused)


def text(response) -> str:
    return response.get_data(as_text=True)


@pytest.mark.parametrize(("make", "status", "code", "details"), REFUSALS, ids=IDS)
def test_the_api_answers_each_refusal_with_its_status_code_and_data(app, make, status, code, details):
    raising(app, "/api/test-refused", make)

    response = app.test_client().get("/api/test-refused")

    assert response.status_code == status
    assert response.get_json() == {"error": {"code": code, "message": message_of(make()), **details}}
    assert (response.headers.get("Retry-After") == str(RETRY_AFTER_S)) is (status == 503)


@pytest.mark.parametrize(("make", "status", "code", "details"), REFUSALS, ids=IDS)
def test_a_page_answers_each_refusal_with_its_status_as_a_page(app, make, status, code, details):
    raising(app, "/test-refused", make)

    response = app.test_client().get("/test-refused")

    assert response.status_code == status and response.mimetype == "text/html"
    page = text(response)
    assert 'class="brand"' in page  # the site's layout
    if status == 503:  # a dependency down: the outage page
        assert "Job queue unavailable" in page and response.headers["Retry-After"] == str(RETRY_AFTER_S)
    else:
        assert message_of(make()) in page


def test_a_refusal_of_a_new_kind_is_answered_as_its_family():
    class LateChunk(uploads.WrongState):
        pass

    class Unsigned(imports.ImportRejected):
        pass

    assert (answer_of(LateChunk("late")).status, answer_of(LateChunk("late")).code) == (
        409,
        "upload_state_conflict",
    )
    assert (answer_of(Unsigned("no")).status, answer_of(Unsigned("no")).code) == (422, "import_rejected")
    with pytest.raises(LookupError):
        answer_of(ValueError("not a refusal"))


def test_the_queue_refusals_are_still_refusals_of_their_package():
    """So that whoever reports refused uploads (the import form, the CLI) reports these too."""
    assert isinstance(imports.QueueUnavailable("x"), imports.ImportRejected)
    assert isinstance(uploads.QueueUnavailable("x"), uploads.UploadRejected)


# -- the pages that answer a refusal with a page of their own ------------------------------------------------


def sign_in(client, user) -> None:
    response = client.post("/login", data={"email": user.email, "password": PASSWORD})
    assert response.status_code == 302


def broker_down(stub_broker, monkeypatch) -> None:
    def down(message, *, delay=None):
        stub_broker.emit_before("enqueue", message, delay)  # the ledger writes its row, as on Redis
        raise ConnectionError("redis is down")

    monkeypatch.setattr(stub_broker, "enqueue", down)


def flashes(response) -> list[str]:
    found = re.findall(r'class="flash flash-error"[^>]*>(.*?)</p>', text(response), re.S)
    return [re.sub(r"\s+", " ", message).strip() for message in found]


def test_the_import_form_with_the_queue_down_is_shown_again_with_503(
    client, admin, telecaller, stub_broker, monkeypatch
):
    sign_in(client, admin)
    broker_down(stub_broker, monkeypatch)
    form = {
        "file": (io.BytesIO(b"name,phone\nAsha,9847012301\n"), "leads.csv"),
        "telecaller_ids": [telecaller.id],
    }

    response = client.post("/imports/new", data=form, content_type="multipart/form-data")

    assert response.status_code == 503 and response.headers["Retry-After"] == str(RETRY_AFTER_S)
    [message] = flashes(response)
    assert "nothing was kept" in message
    assert 'name="file"' in text(response)  # the form again, to send the file later
    assert db.session.execute(sa.select(sa.func.count()).select_from(LeadImport)).scalar() == 0


def test_a_retry_button_with_the_queue_down_is_flashed_and_the_job_stays_failed(
    client, admin, stub_broker, monkeypatch
):
    job = Job(
        id=uuid.uuid4().hex, actor="ping", queue="default", state=JobState.FAILED, branch_id=admin.branch_id
    )
    db.session.add(job)
    db.session.commit()
    sign_in(client, admin)
    broker_down(stub_broker, monkeypatch)

    response = client.post(f"/jobs/{job.id}/retry", follow_redirects=True)

    assert response.status_code == 200
    assert flashes(response) == ["Not retried: The job queue cannot be reached; the job was not retried."]
    db.session.expire_all()
    assert db.session.get(Job, job.id).state is JobState.FAILED
