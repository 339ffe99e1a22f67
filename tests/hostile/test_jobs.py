"""Recording jobs against a real gunicorn: a cancelled job ends its upload (and a retry still makes the
recording once storage is back), and bytes that only start like audio fail their upload in plain words."""

from __future__ import annotations

import hashlib
import random

import pytest

from edcrm.models.recording import UploadReason
from tests.support.audio_samples import wav
from tests.support.s3_server import AWS_ENV
from tests.support.server import Server, wait_until

OCTETS = {"Content-Type": "application/octet-stream"}


def upload_in_chunks(server: Server, data: bytes, parts: int = 2) -> str:
    """A chunked upload of data for the server's call log, every chunk sent: its id (not completed)."""
    size = -(-len(data) // parts)
    chunks = [data[start : start + size] for start in range(0, len(data), size)]
    created = server.api(
        "POST",
        "/api/recordings/uploads",
        json={"call_log_id": server.new_call_log(), "filename": "call.wav", "expected_chunks": len(chunks)},
    )
    assert created.status_code == 201, created.text
    upload_id = created.json()["upload_id"]
    for index, chunk in enumerate(chunks):
        sent = server.api(
            "PUT", f"/api/recordings/uploads/{upload_id}/chunks/{index}", data=chunk, headers=OCTETS
        )
        assert sent.status_code == 200, sent.text
    return upload_id


def complete(server: Server, upload_id: str) -> str:
    completed = server.api("POST", f"/api/recordings/uploads/{upload_id}/complete")
    assert completed.status_code == 202, completed.text
    return completed.json()["job_id"]


def upload_status(server: Server, upload_id: str) -> dict:
    answer = server.api("GET", f"/api/recordings/uploads/{upload_id}")
    assert answer.status_code == 200, answer.text
    return answer.json()


def job_of(server: Server, job_id: str) -> dict:
    answer = server.api("GET", f"/api/jobs/{job_id}", who=server.admin)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a_cancelled_recording_job_ends_its_upload_and_a_retry_after_the_outage_completes_it(
    serve,
    s3_server,
):
    bucket = s3_server.create_bucket()
    server = serve(
        STORAGE_URL=f"s3://{bucket}/edcrm",
        S3_ENDPOINT_URL=s3_server.endpoint_url,
        # A backoff long enough that the job is still `retrying` when it is cancelled.
        JOB_MIN_BACKOFF_MS="120000",
        JOB_MAX_BACKOFF_MS="120000",
        **AWS_ENV,
    )
    audio = wav(1.0)
    upload_id = upload_in_chunks(server, audio, parts=3)

    with s3_server.stopped():  # the recording cannot be finalized: the job fails its attempt and waits
        job_id = complete(server, upload_id)
        waiting = wait_until(
            lambda: (job := job_of(server, job_id))["state"] == "retrying" and job["errors"] and job,
            timeout=60,
            what="the job to wait for its retry",
        )
        assert "Could not connect" in waiting["errors"][0]["error"]  # the admin sees the cause
        assert upload_status(server, upload_id)["status"] == "processing"

        cancelled = server.api("POST", f"/api/jobs/{job_id}/cancel", who=server.admin)
        assert cancelled.status_code == 202, cancelled.text
        assert cancelled.json()["state"] == "cancelled"
        seen = upload_status(server, upload_id)
        assert (seen["status"], seen["received"], seen["missing"]) == ("cancelled", [0, 1, 2], [])
        assert "administrator cancelled" in seen["error"]

    retried = server.api("POST", f"/api/jobs/{job_id}/retry", who=server.admin)  # S3 is back
    assert retried.status_code == 202, retried.text
    done = wait_until(
        lambda: (seen := upload_status(server, upload_id))["status"] == "completed" and seen,
        timeout=60,
        what="the retried upload to complete",
    )
    assert done["error"] is None and done["recording_id"] is not None
    assert wait_until(lambda: job_of(server, job_id)["state"] == "succeeded", what="the job to succeed")
    call_log = server.api("GET", f"/api/call-logs/{done['call_log_id']}")
    assert call_log.status_code == 200, call_log.text
    recording = call_log.json()["recording"]
    assert (recording["size"], recording["sha256"]) == (len(audio), hashlib.sha256(audio).hexdigest())


_noise = random.Random(11).randbytes
FAKES = {
    "riff_wave_alone": (b"RIFF\x24\x00\x00\x00WAVE", "no audio format and data"),
    "oggs_then_noise": (b"OggS" + _noise(20_000), "cannot be read as OGG"),
    "id3_then_noise": (b"ID3" + _noise(20_000), "cannot be read as MP3"),
    "wav_cut_short": (wav(2.0)[:1044], "the WAV file is cut short"),  # 1,000 of 32,000 announced bytes
}


@pytest.mark.parametrize("name", FAKES)
def test_bytes_that_only_start_like_audio_fail_their_upload_in_plain_words(server, name):
    data, reason = FAKES[name]
    upload_id = upload_in_chunks(server, data, parts=2)
    job_id = complete(server, upload_id)
    ended = wait_until(
        lambda: (seen := upload_status(server, upload_id))["status"] in ("failed", "completed") and seen,
        timeout=60,
        what="the upload to end",
    )
    assert ended["status"] == "failed" and ended["recording_id"] is None
    # Plain words for the phone; the admin reads the exact reason in the job's errors.
    assert ended["error"] == UploadReason.UNUSABLE
    job = wait_until(
        lambda: (job := job_of(server, job_id))["state"] in ("cancelled", "failed", "succeeded") and job,
        what="the job to end",
    )
    assert (job["state"], job["attempts"]) == ("cancelled", 1)  # unusable bytes are never retried
    assert reason in job["errors"][0]["error"]
