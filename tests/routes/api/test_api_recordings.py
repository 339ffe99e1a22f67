"""The recordings API: resumable chunked uploads, one-shot uploads, downloads, and who may do what."""

from __future__ import annotations

import hashlib
import io
import threading
from pathlib import Path

import pytest
import requests
from werkzeug.serving import make_server
from werkzeug.test import EnvironBuilder

from edcrm.extensions import db
from edcrm.models import Branch, CallLog, Recording, RecordingUpload, Role, UploadStatus
from tests.support.audio_samples import wav
from tests.support.jobs import run_jobs
from tests.support.openapi import check
from tests.support.people import bearer, make_user
from tests.support.recordings import make_call_log, race_the_limit, split, storage_files


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def call_log(branch, telecaller):
    return make_call_log(branch, telecaller)


@pytest.fixture
def auth(telecaller):
    return bearer(telecaller)


def start(client, auth, call_log, chunks: int, **extra):
    body = {"call_log_id": call_log.id, "filename": "call.wav", "expected_chunks": chunks, **extra}
    response = client.post("/api/recordings/uploads", json=body, headers=auth)
    assert response.status_code == 201, response.json
    return response.json["upload_id"]


def put(client, auth, upload_id, index, data, checksum=None):
    headers = dict(auth)
    if checksum:
        headers["X-Chunk-SHA256"] = checksum
    return client.put(f"/api/recordings/uploads/{upload_id}/chunks/{index}", data=data, headers=headers)


# -- the chunk API ---------------------------------------------------------------------------------------


def test_chunks_out_of_order_and_resent_become_the_recording(
    app, client, auth, call_log, telecaller, stub_broker, stub_worker
):
    audio = wav(2.0)
    chunks = split(audio, 3)
    upload_id = start(client, auth, call_log, 3, total_size=len(audio), sha256=sha(audio))
    assert len(upload_id) == 32

    assert put(client, auth, upload_id, 2, chunks[2]).json == {
        "upload_id": upload_id,
        "received": [2],
        "missing": [0, 1],
    }
    assert put(client, auth, upload_id, 0, chunks[0], sha(chunks[0])).status_code == 200
    assert put(client, auth, upload_id, 0, chunks[0]).json["received"] == [0, 2]  # resent: counted once
    status = client.get(f"/api/recordings/uploads/{upload_id}", headers=auth).json
    assert (status["status"], status["received"], status["missing"]) == ("receiving", [0, 2], [1])
    assert put(client, auth, upload_id, 1, chunks[1]).json["missing"] == []

    response = client.post(f"/api/recordings/uploads/{upload_id}/complete", headers=auth)
    assert response.status_code == 202
    job_id = response.json["job_id"]
    # Completing again is safe: the same job.
    assert client.post(f"/api/recordings/uploads/{upload_id}/complete", headers=auth).json == {
        "job_id": job_id
    }
    run_jobs(stub_broker, stub_worker, "recordings")

    status = client.get(f"/api/recordings/uploads/{upload_id}", headers=auth).json
    assert status["status"] == "completed", status
    assert (status["received"], status["missing"]) == ([0, 1, 2], [])
    assert status["job_id"] == job_id and status["recording_id"] is not None
    recording = client.get(f"/api/call-logs/{call_log.id}", headers=auth).json["recording"]
    assert recording["id"] == status["recording_id"]
    assert (recording["size"], recording["sha256"], recording["content_type"]) == (
        len(audio),
        sha(audio),
        "audio/wav",
    )
    assert recording["duration_seconds"] == pytest.approx(2.0, abs=0.05)
    download = client.get(recording["download_url"], headers=auth)
    assert download.status_code == 200 and download.data == audio
    assert download.mimetype == "audio/wav"
    # Only the recording is left in storage: the chunks went once it was committed.
    assert [name for name in storage_files(app) if name.startswith("uploads/")] == []


def test_a_chunk_that_does_not_match_its_checksum_is_refused_and_nothing_is_kept(app, client, auth, call_log):
    upload_id = start(client, auth, call_log, 2)
    response = put(client, auth, upload_id, 0, b"corrupted", sha(b"original"))
    assert response.status_code == 422
    assert response.json["error"]["code"] == "checksum_mismatch"
    assert client.get(f"/api/recordings/uploads/{upload_id}", headers=auth).json["received"] == []
    assert storage_files(app) == []

    assert put(client, auth, upload_id, 0, b"original", sha(b"original")).status_code == 200
    # A bad copy sent again later does not replace the good one.
    assert put(client, auth, upload_id, 0, b"garbled!", sha(b"original")).status_code == 422
    chunk_file = Path(app.config["STORAGE_URL"].removeprefix("file://")) / f"uploads/{upload_id}/chunks/00000"
    assert chunk_file.read_bytes() == b"original"


def test_a_chunk_over_the_limit_is_413_and_nothing_is_kept(app, client, auth, call_log):
    app.config["MAX_CHUNK_BYTES"] = 1024
    upload_id = start(client, auth, call_log, 1)
    response = put(client, auth, upload_id, 0, b"x" * 1025)
    assert response.status_code == 413
    assert response.json["error"]["code"] == "too_large"
    assert client.get(f"/api/recordings/uploads/{upload_id}", headers=auth).json["received"] == []
    assert storage_files(app) == []


def test_complete_with_chunks_missing_is_409_listing_them(client, auth, call_log):
    upload_id = start(client, auth, call_log, 4)
    put(client, auth, upload_id, 1, b"one")
    response = client.post(f"/api/recordings/uploads/{upload_id}/complete", headers=auth)
    assert response.status_code == 409
    assert response.json["error"]["code"] == "chunks_missing"
    assert response.json["error"]["missing"] == [0, 2, 3]
    assert client.get(f"/api/recordings/uploads/{upload_id}", headers=auth).json["status"] == "receiving"


def test_complete_refuses_chunks_that_do_not_add_up_to_the_announced_size(client, auth, call_log):
    upload_id = start(client, auth, call_log, 1, total_size=10)
    put(client, auth, upload_id, 0, b"12345")
    response = client.post(f"/api/recordings/uploads/{upload_id}/complete", headers=auth)
    assert response.status_code == 422
    assert "5 bytes" in response.json["error"]["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"expected_chunks": 0}, "expected_chunks"),
        ({"expected_chunks": 10_001}, "expected_chunks"),
        ({"expected_chunks": "3"}, "expected_chunks"),
        ({"call_log_id": None}, "call_log_id"),
        ({"filename": ""}, "filename"),
    ],
)
def test_invalid_sessions_are_422_naming_the_field(client, auth, call_log, body, field):
    payload = {"call_log_id": call_log.id, "filename": "a.m4a", "expected_chunks": 2, **body}
    response = client.post("/api/recordings/uploads", json=payload, headers=auth)
    assert response.status_code == 422
    assert field in response.json["error"]["fields"]


def test_a_session_over_the_recording_limit_or_with_a_bad_checksum_is_refused(app, client, auth, call_log):
    app.config["MAX_RECORDING_BYTES"] = 1000
    body = {"call_log_id": call_log.id, "filename": "a.m4a", "expected_chunks": 1}
    assert (
        client.post("/api/recordings/uploads", json={**body, "total_size": 1001}, headers=auth).status_code
        == 413
    )
    response = client.post("/api/recordings/uploads", json={**body, "sha256": "xyz"}, headers=auth)
    assert response.status_code == 422


def test_chunk_indexes_outside_the_upload_are_refused(client, auth, call_log):
    upload_id = start(client, auth, call_log, 2)
    assert put(client, auth, upload_id, 2, b"x").status_code == 422
    assert (
        client.put(f"/api/recordings/uploads/{upload_id}/chunks/-1", data=b"x", headers=auth).status_code
        == 404
    )
    assert (
        client.put(f"/api/recordings/uploads/{upload_id}/chunks/one", data=b"x", headers=auth).status_code
        == 404
    )
    assert put(client, auth, upload_id, 0, b"").status_code == 422


def test_delete_removes_the_chunks_and_closes_the_upload(app, client, auth, call_log):
    upload_id = start(client, auth, call_log, 2)
    put(client, auth, upload_id, 0, b"zero")
    put(client, auth, upload_id, 1, b"one")
    assert len(storage_files(app)) == 2
    assert client.delete(f"/api/recordings/uploads/{upload_id}", headers=auth).status_code == 204
    assert storage_files(app) == []
    status = client.get(f"/api/recordings/uploads/{upload_id}", headers=auth).json
    assert (status["status"], status["received"]) == ("cancelled", [])
    assert put(client, auth, upload_id, 0, b"zero").status_code == 409
    assert client.post(f"/api/recordings/uploads/{upload_id}/complete", headers=auth).status_code == 409


# -- the one-shot upload ----------------------------------------------------------------------------------


def test_a_one_shot_upload_becomes_the_recording(app, client, auth, call_log, stub_broker, stub_worker):
    audio = wav(1.0)
    response = client.post(
        f"/api/call-logs/{call_log.id}/recording",
        data={"file": (io.BytesIO(audio), "call.wav")},
        headers=auth,
    )
    assert response.status_code == 202, response.json
    run_jobs(stub_broker, stub_worker, "recordings")
    recording = client.get(f"/api/call-logs/{call_log.id}", headers=auth).json["recording"]
    assert (recording["size"], recording["sha256"]) == (len(audio), sha(audio))
    assert client.get(recording["download_url"], headers=auth).data == audio
    assert [name for name in storage_files(app) if name.startswith("uploads/")] == []


def test_one_shot_uploads_that_are_too_large_missing_or_not_multipart_are_4xx(app, client, auth, call_log):
    app.config["MAX_RECORDING_BYTES"] = 2048
    url = f"/api/call-logs/{call_log.id}/recording"
    too_big = client.post(url, data={"file": (io.BytesIO(b"x" * 4096), "a.wav")}, headers=auth)
    assert too_big.status_code == 413
    # Just over the limit, within the multipart allowance: counted on the file itself.
    assert (
        client.post(url, data={"file": (io.BytesIO(b"x" * 2049), "a.wav")}, headers=auth).status_code == 413
    )
    no_file = client.post(url, data={"other": "x"}, content_type="multipart/form-data", headers=auth)
    assert no_file.status_code == 422
    assert client.post(url, data=b"raw", headers={**auth, "Content-Type": "audio/wav"}).status_code == 415
    assert [name for name in storage_files(app) if name.startswith("uploads/")] == []


# -- who may do what ---------------------------------------------------------------------------------------


def test_only_the_telecaller_who_logged_the_call_uploads_its_recording(app, client, branch, call_log, admin):
    other = make_user(branch, Role.TELECALLER)
    body = {"call_log_id": call_log.id, "filename": "a.wav", "expected_chunks": 1}
    assert client.post("/api/recordings/uploads", json=body, headers=bearer(other)).status_code == 403
    assert client.post("/api/recordings/uploads", json=body, headers=bearer(admin)).status_code == 403
    assert client.post("/api/recordings/uploads", json=body).status_code == 401
    missing = {**body, "call_log_id": 999_999}
    assert client.post("/api/recordings/uploads", json=missing, headers=bearer(other)).status_code == 404


def test_another_telecaller_cannot_touch_an_upload(client, branch, call_log, auth):
    upload_id = start(client, auth, call_log, 1)
    intruder = bearer(make_user(branch, Role.TELECALLER))
    base = f"/api/recordings/uploads/{upload_id}"
    assert client.put(f"{base}/chunks/0", data=b"x", headers=intruder).status_code == 403
    assert client.get(base, headers=intruder).status_code == 403
    assert client.post(f"{base}/complete", headers=intruder).status_code == 403
    assert client.delete(base, headers=intruder).status_code == 403
    assert client.put(f"{base}/chunks/0", data=b"x").status_code == 401


def test_downloads_are_for_the_telecaller_and_their_branch_admin_only(
    app, client, branch, call_log, auth, admin, stub_broker, stub_worker
):
    audio = wav(0.5)
    client.post(
        f"/api/call-logs/{call_log.id}/recording", data={"file": (io.BytesIO(audio), "a.wav")}, headers=auth
    )
    run_jobs(stub_broker, stub_worker, "recordings")
    url = f"/api/call-logs/{call_log.id}/recording/content"
    assert client.get(url, headers=bearer(admin)).data == audio
    elsewhere = Branch(name="Calicut")
    db.session.add(elsewhere)
    db.session.commit()
    assert client.get(url, headers=bearer(make_user(elsewhere, Role.ADMIN))).status_code == 403
    assert client.get(url, headers=bearer(make_user(branch, Role.TELECALLER))).status_code == 403
    assert client.get(url).status_code == 401
    no_recording = make_call_log(branch, make_user(branch, Role.TELECALLER))
    assert (
        client.get(f"/api/call-logs/{no_recording.id}/recording/content", headers=bearer(admin)).status_code
        == 404
    )


@pytest.mark.parametrize(
    "upload_id", ["..", "..%2F..%2Fetc", "%2E%2E", "A" * 32, "0" * 31, "0" * 33, "g" * 32]
)
def test_upload_ids_that_are_not_ours_are_unknown(client, auth, upload_id):
    assert client.get(f"/api/recordings/uploads/{upload_id}", headers=auth).status_code == 404
    assert (
        client.put(f"/api/recordings/uploads/{upload_id}/chunks/0", data=b"x", headers=auth).status_code
        == 404
    )


def test_a_filename_never_reaches_a_storage_key(app, client, auth, call_log):
    body = {"call_log_id": call_log.id, "filename": "../../../etc/passwd", "expected_chunks": 1}
    upload_id = client.post("/api/recordings/uploads", json=body, headers=auth).json["upload_id"]
    put(client, auth, upload_id, 0, b"data")
    assert storage_files(app) == [f"uploads/{upload_id}/chunks/00000"]
    assert db.session.get(RecordingUpload, upload_id).filename == "passwd"


# -- over a real server: concurrency, chunked transfer ---------------------------------------------------


@pytest.fixture
def live_server(app):
    """The app on a threaded WSGI server on loopback; its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()


def test_a_chunk_without_a_content_length_is_cut_off_at_the_limit(app, auth, call_log, live_server):
    app.config["MAX_CHUNK_BYTES"] = 64 * 1024
    base = f"{live_server}/api/recordings/uploads"
    body = {"call_log_id": call_log.id, "filename": "c.wav", "expected_chunks": 1}
    upload_id = requests.post(base, json=body, headers=auth, timeout=10).json()["upload_id"]
    blocks = (b"y" * 16 * 1024 for _ in range(8))  # a generator: sent with Transfer-Encoding: chunked
    response = requests.put(f"{base}/{upload_id}/chunks/0", data=blocks, headers=auth, timeout=10)
    assert response.status_code == 413
    assert requests.get(f"{base}/{upload_id}", headers=auth, timeout=10).json()["received"] == []
    assert storage_files(app) == []


def test_concurrent_chunks_are_all_kept_and_assemble_byte_identical(
    app, auth, call_log, live_server, stub_broker, stub_worker
):
    """Many chunks PUT at once by threads over real HTTP (a threaded server): none is lost."""
    audio = wav(3.0)
    chunks = split(audio, 24)
    base = f"{live_server}/api/recordings/uploads"
    with requests.Session() as http:
        body = {"call_log_id": call_log.id, "filename": "c.wav", "expected_chunks": len(chunks)}
        upload_id = http.post(base, json=body, headers=auth, timeout=10).json()["upload_id"]

        def send(index: int) -> int:
            with requests.Session() as own:
                url = f"{base}/{upload_id}/chunks/{index}"
                return own.put(url, data=chunks[index], headers=auth, timeout=30).status_code

        order = [*reversed(range(len(chunks))), 0, 5, 11]  # backwards, with some sent twice
        threads = [threading.Thread(target=lambda i=i: results.append(send(i))) for i in order]
        results: list[int] = []
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == [200] * len(order)
        status = http.get(f"{base}/{upload_id}", headers=auth, timeout=10).json()
        assert (status["received"], status["missing"]) == (list(range(len(chunks))), [])
        assert http.post(f"{base}/{upload_id}/complete", headers=auth, timeout=10).status_code == 202
    run_jobs(stub_broker, stub_worker, "recordings")
    db.session.expire_all()
    recording = db.session.get(CallLog, call_log.id).recording
    assert recording is not None and recording.sha256 == sha(audio)
    root = Path(app.config["STORAGE_URL"].removeprefix("file://"))
    assert (root / recording.storage_key).read_bytes() == audio
    assert db.session.query(Recording).count() == 1
    assert db.session.get(RecordingUpload, upload_id).status is UploadStatus.COMPLETED


def test_the_answers_have_the_documented_shapes(app, client, auth, call_log, stub_broker, stub_worker):
    document = client.get("/api/openapi.json").get_json()
    audio = wav(0.5)
    body = {"call_log_id": call_log.id, "filename": "a.wav", "expected_chunks": 2, "sha256": sha(audio)}
    check(document, "UploadRequest", body)
    created = client.post("/api/recordings/uploads", json=body, headers=auth)
    check(document, "UploadCreated", created.json)
    upload_id = created.json["upload_id"]
    chunks = split(audio, 2)
    check(document, "UploadProgress", put(client, auth, upload_id, 0, chunks[0]).json)
    check(document, "Upload", client.get(f"/api/recordings/uploads/{upload_id}", headers=auth).json)
    missing = client.post(f"/api/recordings/uploads/{upload_id}/complete", headers=auth)
    check(document, "Error", missing.json)
    put(client, auth, upload_id, 1, chunks[1])
    accepted = client.post(f"/api/recordings/uploads/{upload_id}/complete", headers=auth)
    check(document, "JobAccepted", accepted.json)
    run_jobs(stub_broker, stub_worker, "recordings")
    check(document, "Upload", client.get(f"/api/recordings/uploads/{upload_id}", headers=auth).json)
    check(document, "CallLog", client.get(f"/api/call-logs/{call_log.id}", headers=auth).json)


# -- hostile bodies: cut off, form-encoded, over the running total, after complete -------------------------

#: What gunicorn tells werkzeug: it terminates the stream itself, so werkzeug reads it as it is.
GUNICORN = {"wsgi.input_terminated": True}


def spool_files() -> list[str]:
    from edcrm import spool

    return sorted(path.name for path in spool.directory().iterdir())


def test_a_chunk_shorter_than_its_content_length_is_400_and_nothing_is_kept(app, client, auth, call_log):
    upload_id = start(client, auth, call_log, 1)
    response = client.put(
        f"/api/recordings/uploads/{upload_id}/chunks/0",
        data=b"x" * 8000,
        headers=auth,
        environ_overrides={**GUNICORN, "CONTENT_LENGTH": "16044"},
    )
    assert response.status_code == 400
    assert response.json["error"]["code"] == "incomplete_body"
    assert client.get(f"/api/recordings/uploads/{upload_id}", headers=auth).json["received"] == []
    assert storage_files(app) == [] and spool_files() == []
    # Sent whole, it is taken.
    assert put(client, auth, upload_id, 0, b"x" * 8000).json["received"] == [0]


def multipart(fields: dict) -> tuple[bytes, str]:
    """A form's body and Content-Type, as a client sends them."""
    environ = EnvironBuilder(method="POST", data=fields).get_environ()
    return environ["wsgi.input"].read(), environ["CONTENT_TYPE"]


def test_a_one_shot_file_shorter_than_its_content_length_is_400_and_nothing_is_kept(
    app, client, auth, call_log, stub_broker
):
    url = f"/api/call-logs/{call_log.id}/recording"
    body, content_type = multipart({"file": (io.BytesIO(wav(0.5)), "call.wav")})
    headers = {**auth, "Content-Type": content_type}
    # The whole form arrives, but less than the length announced: the client went away mid-body.
    for sent, announced in ((body, len(body) + 5000), (body[:-1000], len(body))):
        environ = {**GUNICORN, "CONTENT_LENGTH": str(announced)}
        response = client.post(url, data=sent, headers=headers, environ_overrides=environ)
        assert response.status_code == 400, response.json
        assert response.json["error"]["code"] == "incomplete_body"
    assert db.session.query(RecordingUpload).count() == 0
    assert storage_files(app) == [] and spool_files() == []
    assert stub_broker.queues["recordings"].qsize() == 0
    # Sent whole, it is taken.
    assert client.post(url, data=body, headers=headers, environ_overrides=GUNICORN).status_code == 202


@pytest.mark.parametrize(
    "content_type",
    ["multipart/form-data; boundary=xyz", "application/x-www-form-urlencoded", "text/plain", "audio/wav"],
)
def test_a_chunk_that_is_not_octet_stream_is_415_and_nothing_is_kept(
    app, client, auth, call_log, content_type
):
    upload_id = start(client, auth, call_log, 1)
    url = f"/api/recordings/uploads/{upload_id}/chunks/0"
    response = client.put(url, data=b"--xyz\r\n...", headers={**auth, "Content-Type": content_type})
    assert response.status_code == 415
    assert response.json["error"]["code"] == "unsupported_media_type"
    assert "application/octet-stream" in response.json["error"]["message"]
    assert client.get(f"/api/recordings/uploads/{upload_id}", headers=auth).json["received"] == []
    assert storage_files(app) == []


def test_a_form_encoded_chunk_like_curl_F_is_415(app, client, auth, call_log):
    """`curl -X PUT -F chunk=@part`: the chunk inside a multipart envelope."""
    upload_id = start(client, auth, call_log, 1)
    url = f"/api/recordings/uploads/{upload_id}/chunks/0"
    response = client.put(url, data={"chunk": (io.BytesIO(b"part"), "part")}, headers=auth)
    assert response.status_code == 415
    assert storage_files(app) == []


@pytest.mark.parametrize("content_type", ["application/octet-stream", "application/octet-stream; x=1", None])
def test_an_octet_stream_chunk_or_one_without_content_type_is_taken(client, auth, call_log, content_type):
    upload_id = start(client, auth, call_log, 1)
    headers = {**auth, "Content-Type": content_type} if content_type else auth
    response = client.put(f"/api/recordings/uploads/{upload_id}/chunks/0", data=b"bytes", headers=headers)
    assert response.status_code == 200 and response.json["received"] == [0]


@pytest.mark.parametrize("total_size", [None, 100], ids=["without-total_size", "with-total_size"])
def test_the_chunks_may_not_add_up_to_more_than_the_recording_limit(app, client, auth, call_log, total_size):
    app.config.update(MAX_RECORDING_BYTES=100, MAX_CHUNK_BYTES=70)
    extra = {"total_size": total_size} if total_size else {}
    upload_id = start(client, auth, call_log, 3, **extra)
    assert put(client, auth, upload_id, 0, b"a" * 60).status_code == 200
    over = put(client, auth, upload_id, 1, b"b" * 41)
    assert over.status_code == 413
    assert over.json["error"]["code"] == "too_large" and over.json["error"]["limit"] == 100
    assert client.get(f"/api/recordings/uploads/{upload_id}", headers=auth).json["received"] == [0]
    assert storage_files(app) == [f"uploads/{upload_id}/chunks/00000"]

    # A chunk sent again counts with its new size only.
    assert put(client, auth, upload_id, 0, b"a" * 30).status_code == 200
    assert put(client, auth, upload_id, 1, b"b" * 70).status_code == 200  # 30 + 70
    assert put(client, auth, upload_id, 1, b"c" * 69).status_code == 200  # replaced: 30 + 69
    assert put(client, auth, upload_id, 2, b"d" * 2).status_code == 413  # 30 + 69 + 2
    assert put(client, auth, upload_id, 0, b"a" * 32).status_code == 413  # 32 + 69
    root = Path(app.config["STORAGE_URL"].removeprefix("file://")) / f"uploads/{upload_id}/chunks"
    # The refused copies replaced nothing.
    assert [(root / name).read_bytes() for name in ("00000", "00001")] == [b"a" * 30, b"c" * 69]
    assert sorted(p.name for p in root.iterdir()) == ["00000", "00001"]


def test_concurrent_chunks_cannot_pass_the_recording_limit_together(app, auth, call_log, live_server):
    race_the_limit(app, auth, call_log.id, live_server)


class _ArrivingBody:
    """A chunk's body that arrives in two halves, with `between` happening while the second is on its way."""

    def __init__(self, data: bytes, between):
        self._halves = [data[: len(data) // 2], data[len(data) // 2 :]]
        self._between = between

    def read(self, size: int = -1) -> bytes:
        if len(self._halves) == 1:
            self._between()
        return self._halves.pop(0) if self._halves else b""


def test_a_chunk_whose_body_finishes_after_complete_is_409_and_changes_nothing(
    app, client, auth, call_log, stub_broker, stub_worker
):
    from edcrm.recordings import uploads
    from edcrm.recordings.errors import WrongState

    audio = wav(0.5)
    chunks = split(audio, 2)
    upload_id = start(client, auth, call_log, 2, sha256=sha(audio))
    put(client, auth, upload_id, 0, chunks[0])
    put(client, auth, upload_id, 1, chunks[1])

    def complete():
        assert client.post(f"/api/recordings/uploads/{upload_id}/complete", headers=auth).status_code == 202

    upload = db.session.get(RecordingUpload, upload_id)
    with pytest.raises(WrongState, match="processing"):
        uploads.store_chunk(upload, 1, _ArrivingBody(b"late bytes, replacing chunk 1", complete))
    root = Path(app.config["STORAGE_URL"].removeprefix("file://"))
    assert (root / upload.chunk_key(1)).read_bytes() == chunks[1]  # the good copy is untouched

    run_jobs(stub_broker, stub_worker, "recordings")
    db.session.expire_all()
    recording = db.session.get(CallLog, call_log.id).recording
    assert recording is not None and recording.sha256 == sha(audio)
    assert [name for name in storage_files(app) if name.startswith("uploads/")] == []
    assert spool_files() == []


def test_a_chunk_whose_body_finishes_after_delete_is_409_and_stores_nothing(app, client, auth, call_log):
    from edcrm.recordings import uploads
    from edcrm.recordings.errors import WrongState

    upload_id = start(client, auth, call_log, 2)
    put(client, auth, upload_id, 0, b"zero")

    def delete():
        assert client.delete(f"/api/recordings/uploads/{upload_id}", headers=auth).status_code == 204

    upload = db.session.get(RecordingUpload, upload_id)
    with pytest.raises(WrongState, match="cancelled"):
        uploads.store_chunk(upload, 1, _ArrivingBody(b"one, late", delete))
    assert storage_files(app) == []
    status = client.get(f"/api/recordings/uploads/{upload_id}", headers=auth).json
    assert (status["status"], status["received"]) == ("cancelled", [])


def test_a_chunk_stored_but_not_recorded_leaves_no_object(app, client, auth, call_log, monkeypatch):
    from edcrm.recordings import uploads

    upload_id = start(client, auth, call_log, 2)
    put(client, auth, upload_id, 0, b"zero")

    def fail(*args):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(uploads, "_record_chunk", fail)
    with pytest.raises(RuntimeError):
        uploads.store_chunk(db.session.get(RecordingUpload, upload_id), 1, io.BytesIO(b"one"))
    assert storage_files(app) == [f"uploads/{upload_id}/chunks/00000"]
    assert client.get(f"/api/recordings/uploads/{upload_id}", headers=auth).json["received"] == [0]
