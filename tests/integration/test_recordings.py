"""Call recordings end to end: gunicorn on PostgreSQL and Redis, a real `dramatiq edcrm.actors` worker,
and S3 over HTTP: moto's server (in this process; the web and the worker reach it only by HTTP), and for
the way in Ceph RGW too.

A phone's chunks go through the HTTP API out of order; the worker assembles them into S3; the download
redirects to a signed URL that serves the same bytes. Then S3 goes down while a job runs: the job
retries with every chunk kept, and succeeds on its own once S3 is back.
"""

from __future__ import annotations

import os
import signal

import requests

from tests.support.audio_samples import amr, wav
from tests.support.processes import job_row, wait_for, wait_for_job
from tests.support.stack import send_chunks


def bucket_keys(s3_server, bucket: str) -> list[str]:
    listed = s3_server.client().list_objects_v2(Bucket=bucket)
    return sorted(item["Key"] for item in listed.get("Contents", []))


def test_chunks_through_the_api_become_a_recording_in_s3(s3_stack):
    stack = s3_stack
    audio = wav(1.0) + bytes(11 * 1024 * 1024)  # over 8 MiB: a multipart object
    upload_id = send_chunks(stack, audio, 12, order=[5, 0, 11, 3, 1, 2, 4, 10, 6, 9, 8, 7])

    job_id = stack.api(f"/api/recordings/uploads/{upload_id}/complete", "post").json()["job_id"]
    wait_for_job(stack.engine, job_id, "succeeded", timeout=60, watch=stack.worker)

    status = stack.api(f"/api/recordings/uploads/{upload_id}").json()
    assert status["status"] == "completed" and status["recording_id"] is not None
    download = stack.api(f"/api/call-logs/{stack.call_log_id}/recording/content", allow_redirects=False)
    assert download.status_code == 302
    fetched = requests.get(download.headers["Location"], timeout=30)
    assert fetched.status_code == 200 and fetched.content == audio
    assert bucket_keys(stack.s3, stack.bucket) == [f"edcrm/recordings/{stack.call_log_id}/{upload_id}.wav"]


def test_s3_down_during_finalize_the_job_retries_and_succeeds_once_it_is_back(stack, s3_server):
    engine, worker = stack.engine, stack.worker
    audio = amr(3.0)
    upload_id = send_chunks(stack, audio, 4, order=[3, 2, 1, 0])
    chunk_keys = bucket_keys(s3_server, stack.bucket)
    assert len(chunk_keys) == 4

    with s3_server.stopped():
        job_id = stack.api(f"/api/recordings/uploads/{upload_id}/complete", "post").json()["job_id"]
        wait_for_job(engine, job_id, "retrying", timeout=60, watch=worker)
        # `retrying` is written as the retry is enqueued, the attempt's error row a moment after it.
        waiting = wait_for(
            lambda: (row := job_row(engine, job_id))["errors"] and row,
            timeout=30,
            what="the failed attempt's error",
            watch=worker,
        )
        assert "Could not connect" in waiting["errors"][0]["error"]
        os.killpg(worker.process.pid, signal.SIGSTOP)  # frozen: the retry cannot run while S3 is looked at
    try:
        assert bucket_keys(s3_server, stack.bucket) == chunk_keys  # back, the retry not run: every chunk kept
    finally:
        os.killpg(worker.process.pid, signal.SIGCONT)

    done = wait_for_job(engine, job_id, "succeeded", timeout=60, watch=worker)
    assert done["attempts"] >= 2
    assert job_row(engine, job_id)["state"] == "succeeded"
    status = stack.api(f"/api/recordings/uploads/{upload_id}").json()
    assert status["status"] == "completed" and status["recording_id"] is not None
    assert bucket_keys(s3_server, stack.bucket) == [f"edcrm/recordings/{stack.call_log_id}/{upload_id}.amr"]
