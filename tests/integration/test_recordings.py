"""Call recordings end to end: gunicorn on PostgreSQL and Redis, a real `dramatiq edcrm.actors` worker,
and moto's S3 server over HTTP (in this process; the web and the worker reach it only by HTTP).

A phone's chunks go through the HTTP API out of order; the worker assembles them into S3; the download
redirects to a signed URL that serves the same bytes. Then S3 goes down while a job runs: the job
retries with every chunk kept, and succeeds on its own once S3 is back.
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
from dataclasses import dataclass

import pytest
import redis
import requests
import sqlalchemy as sa
from audio_samples import amr, wav
from s3_server import (
    AWS_ENV,
    s3_server,  # noqa: F401  (the fixture)
)

from .helpers import (
    REPO,
    Service,
    free_port,
    fresh_postgres_database,
    http_get,
    job_row,
    run_flask,
    service_env,
    start_dramatiq,
    start_gunicorn,
    wait_for,
    wait_for_job,
)

pytestmark = pytest.mark.integration

#: A call log of the telecaller whose id is argv[1]; prints its id.
MAKE_CALL_LOG = """
import sys
from edcrm import create_app
from edcrm.extensions import db
from edcrm.models import CallLog, CallOutcome, Lead, User
app = create_app()
with app.app_context():
    telecaller = db.session.get(User, int(sys.argv[1]))
    lead = Lead(branch_id=telecaller.branch_id, telecaller_id=telecaller.id, student_name="Recorded",
                phone_number="+919800000123")
    call_log = CallLog(lead=lead, telecaller_id=telecaller.id, outcome=CallOutcome.CONNECTED)
    db.session.add(call_log)
    db.session.commit()
    print(call_log.id)
"""


@dataclass
class Stack:
    base: str  # the web's URL
    http: requests.Session  # a telecaller's API session
    call_log_id: int  # one of their call logs
    engine: sa.Engine  # on the jobs' database
    bucket: str
    web: Service
    worker: Service


@pytest.fixture
def stack(postgres_url, redis_url, s3_server, tmp_path):  # noqa: F811
    """gunicorn and a dramatiq worker on fresh PostgreSQL and Redis databases and a fresh bucket."""
    redis.Redis.from_url(redis_url).flushdb()
    bucket = s3_server.create_bucket()
    with fresh_postgres_database(postgres_url) as database_url:
        port = free_port()
        env = service_env(
            DATABASE_URL=database_url,
            REDIS_URL=redis_url,
            STORAGE_URL=f"s3://{bucket}/edcrm",
            S3_ENDPOINT_URL=s3_server.endpoint_url,
            EDCRM_INSTANCE_PATH=tmp_path / "instance",
            PORT=port,
            SECRET_KEY="x",
            WEB_CONCURRENCY=1,
            # Long enough to see the job waiting for its retry while S3 is down.
            JOB_MIN_BACKOFF_MS="3000",
            JOB_MAX_BACKOFF_MS="3000",
            **AWS_ENV,
        )
        run_flask("db", "upgrade", env=env)
        demo = json.loads(run_flask("edcrm", "seed-demo", "--json", env=env).stdout)
        telecaller = demo["telecallers"][0]
        argv = [sys.executable, "-c", MAKE_CALL_LOG, str(telecaller["id"])]
        made = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, check=True)
        engine = sa.create_engine(database_url)
        try:
            with (
                start_gunicorn(env, tmp_path / "gunicorn.log") as web,
                start_dramatiq(env, tmp_path / "dramatiq.log", processes=1, threads=2) as worker,
            ):
                base = f"http://127.0.0.1:{port}"
                wait_for(lambda: http_get(f"{base}/healthz"), timeout=60, what="gunicorn", watch=web)
                http = requests.Session()
                http.headers["Authorization"] = f"Bearer {telecaller['token']}"
                yield Stack(base, http, int(made.stdout.strip()), engine, bucket, web, worker)
        finally:
            engine.dispose()


def send_chunks(base: str, http: requests.Session, call_log_id: int, data: bytes, parts: int, order) -> str:
    size = -(-len(data) // parts)
    chunks = [data[i : i + size] for i in range(0, len(data), size)]
    body = {
        "call_log_id": call_log_id,
        "filename": "call.bin",
        "expected_chunks": len(chunks),
        "total_size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    created = http.post(f"{base}/api/recordings/uploads", json=body, timeout=30)
    assert created.status_code == 201, created.text
    upload_id = created.json()["upload_id"]
    for index in order:
        headers = {"X-Chunk-SHA256": hashlib.sha256(chunks[index]).hexdigest()}
        sent = http.put(
            f"{base}/api/recordings/uploads/{upload_id}/chunks/{index}", data=chunks[index], headers=headers
        )
        assert sent.status_code == 200, sent.text
    return upload_id


def bucket_keys(s3_server, bucket: str) -> list[str]:  # noqa: F811
    listed = s3_server.client().list_objects_v2(Bucket=bucket)
    return sorted(item["Key"] for item in listed.get("Contents", []))


def test_chunks_through_the_api_become_a_recording_in_s3(stack, s3_server):  # noqa: F811
    base, http, call_log_id, engine, bucket, worker = (
        stack.base,
        stack.http,
        stack.call_log_id,
        stack.engine,
        stack.bucket,
        stack.worker,
    )
    audio = wav(1.0) + bytes(11 * 1024 * 1024)  # over 8 MiB: a multipart object
    upload_id = send_chunks(base, http, call_log_id, audio, 12, order=[5, 0, 11, 3, 1, 2, 4, 10, 6, 9, 8, 7])

    job_id = http.post(f"{base}/api/recordings/uploads/{upload_id}/complete", timeout=30).json()["job_id"]
    wait_for_job(engine, job_id, "succeeded", timeout=60, watch=worker)

    status = http.get(f"{base}/api/recordings/uploads/{upload_id}", timeout=30).json()
    assert status["status"] == "completed" and status["recording_id"] is not None
    download = http.get(f"{base}/api/call-logs/{call_log_id}/recording/content", allow_redirects=False)
    assert download.status_code == 302
    fetched = requests.get(download.headers["Location"], timeout=30)
    assert fetched.status_code == 200 and fetched.content == audio
    assert bucket_keys(s3_server, bucket) == [f"edcrm/recordings/{call_log_id}/{upload_id}.wav"]


def test_s3_down_during_finalize_the_job_retries_and_succeeds_once_it_is_back(stack, s3_server):  # noqa: F811
    base, http, call_log_id, engine, bucket, worker = (
        stack.base,
        stack.http,
        stack.call_log_id,
        stack.engine,
        stack.bucket,
        stack.worker,
    )
    audio = amr(3.0)
    upload_id = send_chunks(base, http, call_log_id, audio, 4, order=[3, 2, 1, 0])
    chunk_keys = bucket_keys(s3_server, bucket)
    assert len(chunk_keys) == 4

    with s3_server.stopped():
        job_id = http.post(f"{base}/api/recordings/uploads/{upload_id}/complete", timeout=30).json()["job_id"]
        wait_for_job(engine, job_id, "retrying", timeout=60, watch=worker)
        # `retrying` is written as the retry is enqueued, the attempt's error row a moment after it.
        waiting = wait_for(
            lambda: (row := job_row(engine, job_id))["errors"] and row,
            timeout=30,
            what="the failed attempt's error",
            watch=worker,
        )
        assert "Could not connect" in waiting["errors"][0]["error"]
    assert bucket_keys(s3_server, bucket) == chunk_keys  # back, before the retry: every chunk is there

    done = wait_for_job(engine, job_id, "succeeded", timeout=60, watch=worker)
    assert done["attempts"] >= 2
    assert job_row(engine, job_id)["state"] == "succeeded"
    status = http.get(f"{base}/api/recordings/uploads/{upload_id}", timeout=30).json()
    assert status["status"] == "completed" and status["recording_id"] is not None
    assert bucket_keys(s3_server, bucket) == [f"edcrm/recordings/{call_log_id}/{upload_id}.amr"]


def finalized(stack: Stack, data: bytes, parts: int) -> None:
    """data sent in `parts` chunks through the API, then finalized by the worker."""
    upload_id = send_chunks(stack.base, stack.http, stack.call_log_id, data, parts, order=range(parts))
    answer = stack.http.post(f"{stack.base}/api/recordings/uploads/{upload_id}/complete", timeout=30)
    wait_for_job(stack.engine, answer.json()["job_id"], "succeeded", timeout=120, watch=stack.worker)


def test_chunks_as_large_as_the_limit_leave_the_web_and_the_worker_as_small(stack):
    """16 MiB chunks (the default MAX_CHUNK_BYTES) go through the web to S3 and back through the worker
    block by block: neither process's peak memory grows by as much as one chunk."""
    finalized(stack, wav(1.0), 1)  # the worker has made its S3 client and imported what finalize needs
    before = {**stack.web.memory_mb(), **stack.worker.memory_mb()}
    chunk = 16 * 1024 * 1024
    audio = wav(1.0) + random.Random(3).randbytes(3 * chunk - len(wav(1.0)))
    finalized(stack, audio, 3)
    after = {**stack.web.memory_mb(), **stack.worker.memory_mb()}
    growth = {pid: round(after[pid] - before.get(pid, 0), 1) for pid in after}
    assert max(growth.values()) < 16, f"peak RSS growth in MB, by process: {growth}"
