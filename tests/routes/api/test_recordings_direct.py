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
