"""A dependency that is down: 503 with Retry-After, naming it, on the API and as a page, and nothing kept.
And what a telecaller reads of an upload that failed: plain words, never a path, a host or a traceback."""

from __future__ import annotations

import errno
import io
import os
import re

import pytest
import redis
import sqlalchemy as sa
from flask import g

from edcrm import create_app
from edcrm.extensions import db
from edcrm.models import Job, LeadImport, RecordingChunk, RecordingUpload, Role, UploadStatus
from edcrm.models.recording import UploadReason
from edcrm.recordings import uploads
from edcrm.routes.errors import RETRY_AFTER_S
from edcrm.storage import S3Storage
from edcrm.storage.base import StorageUnavailable
from tests.support.audio_samples import wav
from tests.support.imports import SAMPLE_CSV
from tests.support.jobs import run_jobs
from tests.support.pages import text
from tests.support.people import PASSWORD, bearer, make_user
from tests.support.recordings import chunked, make_call_log, storage_files
from tests.support.s3_server import free_port


@pytest.fixture
def callers(branch):
    return [make_user(branch, Role.TELECALLER) for _ in range(2)]


@pytest.fixture
def call_log(branch, callers):
    return make_call_log(branch, callers[0])


def count(model) -> int:
    db.session.rollback()
    return db.session.execute(sa.select(sa.func.count()).select_from(model)).scalar()


def assert_unavailable(response, code: str) -> None:
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.headers["Retry-After"] == str(RETRY_AFTER_S)
    error = response.get_json()["error"]
    assert error["code"] == code and "try again" in error["message"]


# -- storage ------------------------------------------------------------------------------------------------


@pytest.fixture
def s3_down(app, s3_server):
    """The app's storage is a bucket of moto's S3 server; `s3_down.stopped()` takes it down."""
    bucket = s3_server.create_bucket()
    app.extensions["edcrm.storage"] = S3Storage(
        bucket, "edcrm", endpoint_url=s3_server.endpoint_url, region="us-east-1"
    )
    return s3_server


def test_with_s3_down_every_upload_is_503_and_nothing_is_kept(
    client, admin, callers, call_log, s3_down, stub_broker
):
    upload_id = uploads.create_session(callers[0], call_log, filename="a.wav", expected_chunks=2).id
    before = count(RecordingUpload)
    telecaller = bearer(callers[0])
    with s3_down.stopped():
        imported = client.post(
            "/api/imports",
            data={"file": (io.BytesIO(SAMPLE_CSV), "leads.csv"), "telecaller_ids": [str(callers[0].id)]},
            headers=bearer(admin),
        )
        chunk = client.put(
            f"/api/recordings/uploads/{upload_id}/chunks/0", data=b"x" * 100, headers=telecaller
        )
        one_shot = client.post(
            f"/api/call-logs/{call_log.id}/recording",
            data={"file": (io.BytesIO(wav()), "call.wav")},
            headers=telecaller,
        )
        health = client.get("/healthz")

    for response in (imported, chunk, one_shot):
        assert_unavailable(response, "storage_unavailable")
    assert "http" not in text(chunk) and "127.0.0.1" not in text(chunk)
    assert count(LeadImport) == 0 and count(RecordingChunk) == 0 and count(RecordingUpload) == before
    # /healthz keeps its contract: 503 naming what is down (and when to ask again).
    assert health.status_code == 503 and health.headers["Retry-After"] == str(RETRY_AFTER_S)
    assert health.get_json() == {"database": "ok", "broker": "ok", "storage": "down: StorageUnavailable"}

    # Back: the same chunk is taken.
    assert client.put(f"/api/recordings/uploads/{upload_id}/chunks/0", data=b"x", headers=telecaller).json[
        "received"
    ] == [0]


def test_with_s3_down_the_import_page_is_a_503_page_with_the_navigation(
    client, admin, callers, s3_down, stub_broker
):
    assert client.post("/login", data={"email": admin.email, "password": PASSWORD}).status_code == 302
    assert client.get("/imports/new").status_code == 200  # the form needs no storage
    form = {"file": (io.BytesIO(SAMPLE_CSV), "leads.csv"), "telecaller_ids": [str(callers[0].id)]}
    with s3_down.stopped():
        response = client.post("/imports/new", data=form, content_type="multipart/form-data")

    assert response.status_code == 503 and response.headers["Retry-After"] == str(RETRY_AFTER_S)
    page = text(response)
    assert response.mimetype == "text/html" and "File storage unavailable" in page
    assert 'href="/imports"' in page and "Sign out" in page and admin.email in page  # the site's navigation
    assert "Traceback" not in page and "127.0.0.1" not in page
    assert count(LeadImport) == 0


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_a_local_disk_that_cannot_take_the_chunk_is_503(client, callers, call_log, monkeypatch, code):
    upload_id = uploads.create_session(callers[0], call_log, filename="a.wav", expected_chunks=1).id

    def refused(fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", refused)
    response = client.put(
        f"/api/recordings/uploads/{upload_id}/chunks/0", data=b"x", headers=bearer(callers[0])
    )
    monkeypatch.undo()

    assert_unavailable(response, "storage_unavailable")
    assert "/" not in response.get_json()["error"]["message"]
    assert count(RecordingChunk) == 0


# -- the database -------------------------------------------------------------------------------------------


@pytest.fixture
def database_down(tmp_path, monkeypatch):
    """A client of an app whose PostgreSQL refuses connections (nothing listens on its port)."""
    monkeypatch.setenv("EDCRM_INSTANCE_PATH", str(tmp_path / "instance"))
    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "test-secret",
            "SQLALCHEMY_DATABASE_URI": f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/edcrm",
            "STORAGE_URL": (tmp_path / "storage").as_uri(),
            "WTF_CSRF_ENABLED": False,
        }
    )
    yield app.test_client()
    with app.app_context():
        db.engine.dispose()


def test_with_the_database_down_the_api_is_503_database_unavailable(database_down):
    assert_unavailable(
        database_down.get("/api/leads", headers={"Authorization": "Bearer x"}), "database_unavailable"
    )
    assert_unavailable(
        database_down.post("/api/auth/token", json={"email": "a@b.test", "password": "p"}),
        "database_unavailable",
    )


def test_with_the_database_down_pages_are_503_pages_that_look_nothing_up(database_down):
    response = database_down.post("/login", data={"email": "a@b.test", "password": "p"})

    assert response.status_code == 503 and response.headers["Retry-After"] == str(RETRY_AFTER_S)
    page = text(response)
    assert "Database unavailable" in page and 'class="brand"' in page  # the site's layout
    assert "OperationalError" not in page and "Traceback" not in page


def test_a_signed_in_users_page_with_the_database_gone_is_a_503_page(app, client, admin, monkeypatch):
    from edcrm import auth

    assert client.post("/login", data={"email": admin.email, "password": PASSWORD}).status_code == 302

    def gone(user_id):
        raise sa.exc.OperationalError("SELECT", {}, Exception("database is not accepting connections"))

    monkeypatch.setattr(auth.login_manager, "_user_callback", gone)
    g.pop("_login_user", None)  # (the fixtures' app context would keep the user of the login)
    response = client.get("/imports")

    assert response.status_code == 503 and "Database unavailable" in text(response)
    assert 'class="brand"' in text(response) and "Sign out" not in text(response)  # no user looked up


# -- the broker ---------------------------------------------------------------------------------------------


def test_with_the_broker_down_complete_is_503_with_retry_after_and_can_be_sent_again(
    client, callers, call_log, stub_broker, monkeypatch
):
    upload = chunked(callers[0], call_log, wav(), 1)

    def down(message, *, delay=None):
        stub_broker.emit_before("enqueue", message, delay)  # the ledger writes its row, as on Redis
        raise redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6390. Connection refused.")

    with monkeypatch.context() as patch:
        patch.setattr(stub_broker, "enqueue", down)
        response = client.post(f"/api/recordings/uploads/{upload.id}/complete", headers=bearer(callers[0]))
    assert_unavailable(response, "queue_unavailable")
    assert db.session.get(RecordingUpload, upload.id).status is UploadStatus.RECEIVING
    assert count(Job) == 0  # the ledger lists no job that was never sent

    assert (
        client.post(f"/api/recordings/uploads/{upload.id}/complete", headers=bearer(callers[0])).status_code
        == 202
    )


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6390."), "queue_unavailable"),
        (redis.exceptions.TimeoutError("Timeout reading from 127.0.0.1:6390"), "queue_unavailable"),
        (
            sa.exc.OperationalError("SELECT 1", {}, Exception("server closed the connection")),
            "database_unavailable",
        ),
        (sa.exc.DisconnectionError("gone"), "database_unavailable"),
        (OSError(errno.ENOSPC, "No space left on device"), "storage_unavailable"),
        (StorageUnavailable("S3 is unavailable"), "storage_unavailable"),
    ],
)
def test_each_family_is_recognised_wherever_it_rises_and_whatever_wraps_it(app, error, code):
    def fails():
        raise error

    def fails_wrapped():
        try:
            fails()
        except Exception as cause:
            raise RuntimeError("the job ledger cannot be written") from cause

    app.add_url_rule("/api/test-fails", "fails", fails)
    app.add_url_rule("/api/test-fails-wrapped", "fails_wrapped", fails_wrapped)
    client = app.test_client()
    assert_unavailable(client.get("/api/test-fails"), code)
    assert_unavailable(client.get("/api/test-fails-wrapped"), code)


def test_other_errors_stay_500(app):
    def fails():
        raise OSError(errno.ECONNRESET, "Connection reset by peer")

    app.add_url_rule("/api/test-fails", "fails", fails)
    response = app.test_client().get("/api/test-fails")
    assert response.status_code == 500 and "Retry-After" not in response.headers


# -- what the telecaller reads of a failed upload -----------------------------------------------------------

#: Things that must never reach a phone: a server path, a host or URL, an exception's name, a traceback.
LEAKS = re.compile(r"/[a-z]+/|https?://|127\.0\.0\.1|Error\b|Traceback|Exception")


def upload_error(client, telecaller, upload_id: str) -> str:
    response = client.get(f"/api/recordings/uploads/{upload_id}", headers=bearer(telecaller))
    assert response.status_code == 200
    return response.json["error"]


def test_a_file_that_is_not_audio_is_told_in_plain_words(
    app, client, callers, call_log, stub_broker, stub_worker
):
    upload = chunked(callers[0], call_log, b"plain text, not audio" * 100, 2)
    uploads.complete(upload)
    run_jobs(stub_broker, stub_worker, "recordings")

    error = upload_error(client, callers[0], upload.id)
    assert error == UploadReason.UNUSABLE and not LEAKS.search(error)


def test_an_s3_outage_that_outlasts_the_retries_is_told_in_plain_words(
    app,
    client,
    admin,
    callers,
    call_log,
    s3_down,
    stub_broker,
    stub_worker,
):
    upload = chunked(callers[0], call_log, wav(), 2)
    with s3_down.stopped():
        uploads.complete(upload)
        run_jobs(stub_broker, stub_worker, "recordings")

    error = upload_error(client, callers[0], upload.id)
    assert error == UploadReason.SERVER and not LEAKS.search(error)
    # The details are the admin's, on the job.
    job = client.get(f"/api/jobs/{upload.job_id}", headers=bearer(admin))
    assert "Could not connect" in job.json["errors"][-1]["error"]


@pytest.mark.parametrize(
    "stored",
    [
        "FileExistsError: [Errno 17] File exists: '/srv/edcrm/storage/recordings/13'",
        "EndpointConnectionError: Could not connect to the endpoint URL: http://127.0.0.1:5056/b/k",
        'Traceback (most recent call last):\n  File "/srv/edcrm/edcrm/recordings/finalize.py", line 1',
    ],
)
def test_whatever_an_operator_wrote_the_telecaller_reads_no_internals(client, callers, call_log, stored):
    upload = uploads.create_session(callers[0], call_log, filename="a.wav", expected_chunks=1)
    upload.status, upload.error = UploadStatus.FAILED, stored
    db.session.commit()

    error = upload_error(client, callers[0], upload.id)
    assert error == UploadReason.FAILED and not LEAKS.search(error)


def test_with_the_broker_down_a_one_shot_upload_is_503_and_keeps_nothing(
    app, client, callers, call_log, stub_broker, monkeypatch
):
    def down(message, *, delay=None):
        stub_broker.emit_before("enqueue", message, delay)  # the ledger writes its row, as on Redis
        raise redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6390. Connection refused.")

    monkeypatch.setattr(stub_broker, "enqueue", down)
    response = client.post(
        f"/api/call-logs/{call_log.id}/recording",
        data={"file": (io.BytesIO(wav()), "call.wav")},
        headers=bearer(callers[0]),
    )

    assert_unavailable(response, "queue_unavailable")
    assert (count(RecordingUpload), count(Job)) == (0, 0)
    assert storage_files(app) == []
