"""The recordings API where bytes go straight to their object: the chunk API with 8 MiB chunks, the
one-shot upload's upload_id and Location, and a tus upload's offset and length."""

from __future__ import annotations

import hashlib
import io
import random

import pytest

from edcrm.extensions import db
from edcrm.models import RecordingUpload, UploadStatus
from edcrm.models.recording import UploadKind
from tests.support.audio_samples import wav
from tests.support.jobs import run_jobs
from tests.support.openapi import check
from tests.support.people import bearer
from tests.support.recordings import make_call_log, storage_files

MIB = 1024 * 1024


@pytest.fixture
def call_log(branch, telecaller):
    return make_call_log(branch, telecaller)


@pytest.fixture
def auth(telecaller):
    return bearer(telecaller)


def test_8_mib_chunks_put_over_http_become_the_recording(
    app, client, auth, call_log, stub_broker, stub_worker
):
    audio = wav(1.0) + random.Random(1).randbytes(2 * 8 * MIB + MIB - len(wav(1.0)))
    chunks = [audio[i : i + 8 * MIB] for i in range(0, len(audio), 8 * MIB)]
    body = {
        "call_log_id": call_log.id,
        "filename": "call.wav",
        "expected_chunks": len(chunks),
        "total_size": len(audio),
        "sha256": hashlib.sha256(audio).hexdigest(),
    }
    upload_id = client.post("/api/recordings/uploads", json=body, headers=auth).json["upload_id"]
    for index in (1, 0, 2, 1):  # out of order, one sent twice
        url = f"/api/recordings/uploads/{upload_id}/chunks/{index}"
        response = client.put(url, data=chunks[index], headers=auth)
        assert response.status_code == 200, response.json
    assert response.json["missing"] == []
    # The chunks are parts of the recording's object, not objects of their own.
    assert [name for name in storage_files(app) if name.startswith("uploads/")] == []

    accepted = client.post(f"/api/recordings/uploads/{upload_id}/complete", headers=auth)
    assert accepted.status_code == 202
    run_jobs(stub_broker, stub_worker, "recordings")

    status = client.get(f"/api/recordings/uploads/{upload_id}", headers=auth).json
    assert status["status"] == "completed" and status["received"] == [0, 1, 2]
    assert "offset" not in status  # a chunk upload's answer is as it was
    recording = client.get(f"/api/call-logs/{call_log.id}", headers=auth).json["recording"]
    assert (recording["size"], recording["sha256"]) == (len(audio), body["sha256"])
    assert (recording["content_type"], recording["duration_seconds"]) == ("audio/wav", 1.0)


def test_a_one_shot_upload_answers_its_upload_and_where_to_follow_it(
    app, client, auth, call_log, stub_broker, stub_worker
):
    document = client.get("/api/openapi.json").get_json()
    audio = wav(1.0)
    response = client.post(
        f"/api/call-logs/{call_log.id}/recording", data={"file": (io.BytesIO(audio), "c.wav")}, headers=auth
    )
    assert response.status_code == 202
    check(document, "SingleUploadAccepted", response.json)
    upload_id = response.json["upload_id"]
    assert response.headers["Location"] == f"/api/recordings/uploads/{upload_id}"

    following = client.get(response.headers["Location"], headers=auth).json
    assert (following["status"], following["job_id"]) == ("processing", response.json["job_id"])
    run_jobs(stub_broker, stub_worker, "recordings")
    done = client.get(response.headers["Location"], headers=auth).json
    check(document, "Upload", done)
    assert done["status"] == "completed" and done["recording_id"] is not None


@pytest.mark.parametrize(
    ("length", "offset"), [(None, 0), (9 * MIB, 5 * MIB + 17)], ids=["deferred", "known"]
)
def test_a_tus_upload_reports_its_offset_and_length(client, auth, telecaller, call_log, length, offset):
    upload = RecordingUpload(
        call_log_id=call_log.id,
        telecaller_id=telecaller.id,
        filename="t.m4a",
        kind=UploadKind.TUS,
        expected_chunks=1,
        total_size=length,
        offset=offset,
    )
    db.session.add(upload)
    db.session.commit()
    answer = client.get(f"/api/recordings/uploads/{upload.id}", headers=auth).json
    check(client.get("/api/openapi.json").get_json(), "Upload", answer)
    assert (answer["status"], answer["offset"], answer["length"]) == (
        UploadStatus.RECEIVING.value,
        offset,
        length,
    )


def test_an_8_mib_chunk_while_s3_is_down_is_503_and_kept_once_sent_again(
    app, client, auth, call_log, s3_server, stub_broker, stub_worker
):
    bucket = s3_server.create_bucket()
    app.config.update(STORAGE_URL=f"s3://{bucket}/edcrm", S3_ENDPOINT_URL=s3_server.endpoint_url)
    app.extensions.pop("edcrm.storage", None)
    audio = wav(1.0) + random.Random(2).randbytes(8 * MIB + 1000 - len(wav(1.0)))
    chunks = [audio[: 8 * MIB], audio[8 * MIB :]]
    body = {"call_log_id": call_log.id, "filename": "c.wav", "expected_chunks": 2}
    upload_id = client.post("/api/recordings/uploads", json=body, headers=auth).json["upload_id"]
    url = f"/api/recordings/uploads/{upload_id}/chunks"

    with s3_server.stopped():
        down = client.put(f"{url}/0", data=chunks[0], headers=auth)
        assert down.status_code == 503 and down.json["error"]["code"] == "storage_unavailable"
    status = client.get(f"/api/recordings/uploads/{upload_id}", headers=auth).json
    assert status["received"] == []
    assert db.session.get(RecordingUpload, upload_id).multipart_id is None  # nothing half-started

    for index in (0, 1):
        assert client.put(f"{url}/{index}", data=chunks[index], headers=auth).status_code == 200
    client.post(f"/api/recordings/uploads/{upload_id}/complete", headers=auth)
    run_jobs(stub_broker, stub_worker, "recordings")
    recording = client.get(f"/api/call-logs/{call_log.id}", headers=auth).json["recording"]
    assert recording["sha256"] == hashlib.sha256(audio).hexdigest()
    listed = s3_server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert listed == []


def test_a_multipart_upload_started_before_an_outage_is_recorded_and_aborted_by_delete(
    app, client, auth, call_log, s3_server, monkeypatch
):
    """S3 goes down after the multipart upload is started, as the chunk's part is sent: 503, and the
    started upload is the upload's, so DELETE aborts it (S3 would keep its parts, and bill them)."""
    bucket = s3_server.create_bucket()
    app.config.update(STORAGE_URL=f"s3://{bucket}/edcrm", S3_ENDPOINT_URL=s3_server.endpoint_url)
    app.extensions.pop("edcrm.storage", None)
    from edcrm.storage import get_storage

    storage = get_storage()
    real_put_part = storage.put_part

    def put_part_in_an_outage(*args, **kwargs):
        s3_server.stop()  # and down until the answer is in: an abort now fails too
        return real_put_part(*args, **kwargs)

    monkeypatch.setattr(storage, "put_part", put_part_in_an_outage)
    body = {"call_log_id": call_log.id, "filename": "c.wav", "expected_chunks": 2}
    upload_id = client.post("/api/recordings/uploads", json=body, headers=auth).json["upload_id"]
    data = wav(1.0) + bytes(8 * MIB - len(wav(1.0)))
    try:
        down = client.put(f"/api/recordings/uploads/{upload_id}/chunks/0", data=data, headers=auth)
    finally:
        s3_server.start()
    assert down.status_code == 503
    assert len(s3_server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])) == 1

    assert client.delete(f"/api/recordings/uploads/{upload_id}", headers=auth).status_code == 204
    assert s3_server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
