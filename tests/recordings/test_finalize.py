"""Finalizing uploads into recordings: the recordings actors on the StubBroker with a real worker,
on local storage and on moto's S3 server over HTTP."""

from __future__ import annotations

import hashlib
import io
import random
import time
import tracemalloc

import pytest
import sqlalchemy as sa

from edcrm.actors.recordings import process_chunked_recording
from edcrm.extensions import db
from edcrm.jobs import ledger
from edcrm.models import CallLog, Job, JobState, Recording, RecordingUpload, Role, UploadStatus
from edcrm.models.recording import UploadReason
from edcrm.recordings import finalize, uploads
from edcrm.storage import get_storage
from tests.support.audio_samples import amr, wav
from tests.support.jobs import run_jobs
from tests.support.people import make_user
from tests.support.recordings import chunked, make_call_log, storage_files

MIB = 1024 * 1024


def job(job_id: str) -> Job:
    db.session.expire_all()
    return db.session.get(Job, job_id)


def upload_of(upload_id: str) -> RecordingUpload:
    db.session.expire_all()
    return db.session.get(RecordingUpload, upload_id)


@pytest.fixture
def call_log(branch, telecaller):
    return make_call_log(branch, telecaller)


def test_chunks_sent_out_of_order_become_a_byte_identical_recording(
    app, telecaller, call_log, stub_broker, stub_worker
):
    audio = amr(3.0)
    upload = chunked(telecaller, call_log, audio, 7, order=[3, 0, 6, 1, 5, 2, 4], total_size=len(audio))
    job_id = uploads.complete(upload)
    run_jobs(stub_broker, stub_worker, "recordings")

    assert job(job_id).state is JobState.SUCCEEDED
    recording = db.session.get(CallLog, call_log.id).recording
    assert (recording.content_type, recording.duration_seconds) == ("audio/amr", 3.0)
    assert recording.storage_key == f"recordings/{call_log.id}/{upload.id}.amr"
    with get_storage().open(recording.storage_key) as stored:
        assert stored.read() == audio
    assert recording.sha256 == hashlib.sha256(audio).hexdigest() and recording.size == len(audio)
    assert upload_of(upload.id).status is UploadStatus.COMPLETED
    assert storage_files(app) == [recording.storage_key]  # the chunks are gone


def test_a_second_run_of_the_same_upload_only_finishes_the_cleanup(
    app, telecaller, call_log, stub_broker, stub_worker, monkeypatch
):
    """The first run dies after committing the Recording, before deleting the chunks (a worker killed
    there, or storage failing): the chunks stay, and the retry finds the work done and cleans up."""
    audio = wav(1.0)
    upload = chunked(telecaller, call_log, audio, 3)
    real_remove, calls = finalize.remove_received, []

    def remove_failing_once(target):
        calls.append(target.id)
        if len(calls) == 1:
            assert len(storage_files(app)) == 4  # committed recording + the 3 chunks, all kept
            raise ConnectionError("storage went away")
        real_remove(target)

    monkeypatch.setattr(finalize, "remove_received", remove_failing_once)
    job_id = uploads.complete(upload)
    run_jobs(stub_broker, stub_worker, "recordings")

    assert (job(job_id).state, job(job_id).attempts) == (JobState.SUCCEEDED, 2)
    assert db.session.execute(sa.select(sa.func.count()).select_from(Recording)).scalar() == 1
    assert len(storage_files(app)) == 1
    # And one more delivery of the message (at least once): nothing changes.
    process_chunked_recording.send(upload.id)
    run_jobs(stub_broker, stub_worker, "recordings")
    assert db.session.execute(sa.select(sa.func.count()).select_from(Recording)).scalar() == 1


@pytest.mark.parametrize(
    ("data", "announced", "reason"),
    [
        (b"plain text, not audio" * 100, {}, "not a recording"),
        (wav(0.5), {"sha256": "0" * 64}, "SHA-256"),
        # Bytes that only start like audio: the container is parsed before anything is stored.
        (b"RIFF\x24\x00\x00\x00WAVE", {}, "it looks like WAV audio, but it has no audio format and data"),
        (b"OggS" + random.Random(1).randbytes(6000), {}, "cannot be read as OGG"),
        (b"ID3" + random.Random(2).randbytes(6000), {}, "cannot be read as MP3"),
        (wav(2.0)[:1044], {}, "the WAV file is cut short"),  # 1,000 of the 32,000 bytes it announces
    ],
)
def test_bytes_that_cannot_be_the_recording_fail_the_upload_without_retries(
    app, telecaller, call_log, stub_broker, stub_worker, data, announced, reason
):
    upload = chunked(telecaller, call_log, data, 2, **announced)
    job_id = uploads.complete(upload)
    run_jobs(stub_broker, stub_worker, "recordings")

    assert (job(job_id).state, job(job_id).attempts) == (JobState.CANCELLED, 1)
    failed = upload_of(upload.id)
    # The telecaller reads a plain reason; the admin, the details in the job's errors.
    assert failed.status is UploadStatus.FAILED and failed.error == UploadReason.UNUSABLE
    assert reason in job(job_id).errors[0].error
    assert db.session.get(CallLog, call_log.id).recording is None
    assert not any(name.startswith("recordings/") for name in storage_files(app))


def test_an_unknown_upload_is_cancelled(app, stub_broker, stub_worker):
    with app.app_context():
        message = process_chunked_recording.send("f" * 32)
        run_jobs(stub_broker, stub_worker, "recordings")
        assert job(message.message_id).state is JobState.CANCELLED
        assert "does not exist" in job(message.message_id).errors[0].error


def test_a_deleted_call_log_cancels_the_job_and_removes_the_chunks(
    app, telecaller, call_log, stub_broker, stub_worker
):
    upload = chunked(telecaller, call_log, wav(0.5), 2)
    stub_worker.pause()  # the call log goes before the job runs
    job_id = uploads.complete(upload)
    db.session.delete(db.session.get(CallLog, call_log.id))
    db.session.commit()
    stub_worker.resume()
    run_jobs(stub_broker, stub_worker, "recordings")

    assert job(job_id).state is JobState.CANCELLED
    assert upload_of(upload.id).status is UploadStatus.CANCELLED
    assert storage_files(app) == []


def test_a_call_log_deleted_while_its_recording_is_stored_leaves_nothing_behind(
    app, telecaller, call_log, stub_broker, stub_worker, monkeypatch
):
    """The call log goes after the object is stored but before the Recording is committed: the commit
    fails, the object is removed, and the retry, finding the call log gone, cancels and removes the
    chunks."""
    storage = get_storage()
    real_assemble = storage.assemble

    def store_then_delete_call_log(*args, **kwargs):
        size = real_assemble(*args, **kwargs)
        db.session.execute(sa.delete(CallLog).where(CallLog.id == call_log.id))
        db.session.commit()
        return size

    monkeypatch.setattr(storage, "assemble", store_then_delete_call_log)
    upload = chunked(telecaller, call_log, wav(0.5), 2)
    job_id = uploads.complete(upload)
    run_jobs(stub_broker, stub_worker, "recordings")

    assert (job(job_id).state, job(job_id).attempts) == (JobState.CANCELLED, 2)
    assert upload_of(upload.id).status is UploadStatus.CANCELLED
    assert db.session.execute(sa.select(sa.func.count()).select_from(Recording)).scalar() == 0
    assert storage_files(app) == []


def test_a_lost_chunk_cancels_the_job(app, telecaller, call_log, stub_broker, stub_worker):
    upload = chunked(telecaller, call_log, wav(0.5), 3)
    job_id = uploads.complete(upload)
    get_storage().delete(upload.chunk_key(1))
    run_jobs(stub_broker, stub_worker, "recordings")

    assert job(job_id).state is JobState.CANCELLED
    assert upload_of(upload.id).error == UploadReason.GONE
    assert "chunks/00001" in job(job_id).errors[0].error


def test_a_one_shot_upload_becomes_the_recording(app, telecaller, call_log, stub_broker, stub_worker):
    audio = wav(1.5)
    job_id = uploads.start_single_upload(telecaller, call_log, io.BytesIO(audio), "x.wav")
    run_jobs(stub_broker, stub_worker, "recordings")
    assert job(job_id).state is JobState.SUCCEEDED
    recording = db.session.get(CallLog, call_log.id).recording
    assert (recording.size, recording.duration_seconds) == (len(audio), 1.5)
    assert storage_files(app) == [recording.storage_key]


def test_chunks_as_large_as_the_limit_are_streamed_not_held_whole(
    app, telecaller, call_log, stub_broker, stub_worker
):
    """A phone may send chunks of up to MAX_CHUNK_BYTES (16 MiB by default): finalize reads them block
    by block, so the worker holds a few MiB of one at a time, not the chunk (nor two of them)."""
    app.config["MAX_CHUNK_BYTES"] = 24 * MIB
    audio = wav(1.0) + random.Random(5).randbytes(3 * 24 * MIB - len(wav(1.0)))
    upload = chunked(telecaller, call_log, audio, 3, total_size=len(audio))
    job_id = uploads.complete(upload)

    tracemalloc.start()
    try:
        run_jobs(stub_broker, stub_worker, "recordings")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert job(job_id).state is JobState.SUCCEEDED
    recording = db.session.get(CallLog, call_log.id).recording
    assert recording.sha256 == hashlib.sha256(audio).hexdigest() and recording.size == len(audio)
    assert peak < 12 * MIB, f"finalize held {peak / MIB:.1f} MiB at its peak, for 24 MiB chunks"


def test_every_recording_of_a_call_is_kept_and_the_latest_is_its_recording(
    app, branch, telecaller, call_log, stub_broker, stub_worker
):
    for seconds in (1.0, 2.0):
        uploads.start_single_upload(telecaller, call_log, io.BytesIO(wav(seconds)), "x.wav")
        run_jobs(stub_broker, stub_worker, "recordings")
    assert db.session.get(CallLog, call_log.id).recording.duration_seconds == 2.0
    other = make_call_log(branch, make_user(branch, Role.TELECALLER))
    assert db.session.get(CallLog, other.id).recording is None


# -- on S3 (moto's server over HTTP) ----------------------------------------------------------------------


@pytest.fixture
def s3_app(app, s3_server):
    bucket = s3_server.create_bucket()
    app.config.update(STORAGE_URL=f"s3://{bucket}/edcrm", S3_ENDPOINT_URL=s3_server.endpoint_url)
    app.extensions.pop("edcrm.storage", None)
    return app


def s3_keys(s3_server, app) -> list[str]:
    bucket = app.config["STORAGE_URL"].removeprefix("s3://").split("/", 1)[0]
    listed = s3_server.client().list_objects_v2(Bucket=bucket)
    return sorted(item["Key"] for item in listed.get("Contents", []))


def test_on_s3_small_chunks_are_gathered_into_a_multipart_recording(
    s3_app,
    s3_server,
    telecaller,
    call_log,
    stub_broker,
    stub_worker,
):
    """20 MiB in 1 MiB chunks: stored as one multipart object of 8 MiB parts (all but the last at least
    5 MiB, as S3 requires)."""
    audio = wav(1.0) + bytes(20 * MIB)
    upload = chunked(telecaller, call_log, audio, 20)
    job_id = uploads.complete(upload)
    run_jobs(stub_broker, stub_worker, "recordings")

    assert job(job_id).state is JobState.SUCCEEDED
    recording = db.session.get(CallLog, call_log.id).recording
    bucket = s3_app.config["STORAGE_URL"].removeprefix("s3://").split("/", 1)[0]
    head = s3_server.client().head_object(Bucket=bucket, Key=f"edcrm/{recording.storage_key}")
    assert head["ContentLength"] == len(audio)
    assert head["ETag"].strip('"').endswith("-3")  # three parts: 8 + 8 + 4 MiB
    with get_storage().open(recording.storage_key) as stored:
        assert hashlib.sha256(stored.read()).hexdigest() == hashlib.sha256(audio).hexdigest()
    assert s3_keys(s3_server, s3_app) == [f"edcrm/{recording.storage_key}"]


def test_an_s3_outage_during_finalize_is_retried_and_loses_nothing(
    s3_app,
    s3_server,
    telecaller,
    call_log,
    stub_broker,
    stub_worker,
):
    audio = wav(2.0)
    upload = chunked(telecaller, call_log, audio, 4)
    chunk_keys = s3_keys(s3_server, s3_app)
    assert len(chunk_keys) == 4

    with s3_server.stopped():
        job_id = uploads.complete(upload)
        run_jobs(stub_broker, stub_worker, "recordings")
        down = job(job_id)
        # Retried with backoff until its retries ran out, then failed: the upload says why.
        assert (down.state, down.attempts) == (JobState.FAILED, 4)
        assert upload_of(upload.id).status is UploadStatus.FAILED
        assert upload_of(upload.id).error == UploadReason.SERVER
        assert "Could not connect" in down.errors[-1].error

    assert s3_keys(s3_server, s3_app) == chunk_keys  # every chunk is still there
    ledger.retry(job_id)  # the operator, once S3 is back
    run_jobs(stub_broker, stub_worker, "recordings")
    assert job(job_id).state is JobState.SUCCEEDED
    recording = db.session.get(CallLog, call_log.id).recording
    with get_storage().open(recording.storage_key) as stored:
        assert stored.read() == audio
    assert s3_keys(s3_server, s3_app) == [f"edcrm/{recording.storage_key}"]


def wait_for(predicate, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_s3_back_during_the_backoff_the_retry_succeeds_on_its_own(
    s3_app,
    s3_server,
    telecaller,
    call_log,
    stub_broker,
    stub_worker,
    monkeypatch,
):
    """S3 is down when the job first runs: the attempt fails, the job waits its backoff with every chunk
    kept; S3 comes back (same port) and the next attempt, with no operator, stores the recording."""
    # A backoff long enough to pause the worker before the retry runs (1 to 2 s, with the jitter): the
    # pause takes one poll of the worker's (stub_worker), the rest of the backoff is waited out after it.
    monkeypatch.setitem(process_chunked_recording.options, "min_backoff", 2_000)
    monkeypatch.setitem(process_chunked_recording.options, "max_backoff", 2_000)
    audio = amr(2.0)
    upload = chunked(telecaller, call_log, audio, 5, sha256=hashlib.sha256(audio).hexdigest())
    chunk_keys = s3_keys(s3_server, s3_app)

    with s3_server.stopped():
        job_id = uploads.complete(upload)
        # `retrying` is written as the retry is enqueued, the attempt's error a moment later: both.
        wait_for(lambda: (row := job(job_id)).state is JobState.RETRYING and row.errors)
        failed_attempt = job(job_id)
        assert failed_attempt.attempts == 1
        assert "Could not connect" in failed_attempt.errors[0].error
        assert upload_of(upload.id).status is UploadStatus.PROCESSING  # not over: it is being retried
        stub_worker.pause()  # the retry cannot run while S3 is looked at, however slow the machine
    assert s3_keys(s3_server, s3_app) == chunk_keys  # S3 is back, the retry not yet run: all kept

    stub_worker.resume()
    run_jobs(stub_broker, stub_worker, "recordings")
    done = job(job_id)
    assert (done.state, done.attempts) == (JobState.SUCCEEDED, 2)
    recording = db.session.get(CallLog, call_log.id).recording
    assert upload_of(upload.id).recording_id == recording.id
    with get_storage().open(recording.storage_key) as stored:
        assert stored.read() == audio
    assert s3_keys(s3_server, s3_app) == [f"edcrm/{recording.storage_key}"]


def test_cancelling_a_retrying_recording_job_ends_its_upload_and_a_retry_after_the_outage_completes_it(
    s3_app,
    s3_server,
    telecaller,
    call_log,
    stub_broker,
    stub_worker,
    monkeypatch,
):
    """S3 is down: the job waits in its backoff and an operator cancels it. The upload is over at once
    (`cancelled`, not `processing` forever), its chunks kept; a retry once S3 is back makes the recording."""
    monkeypatch.setitem(process_chunked_recording.options, "min_backoff", 60_000)
    monkeypatch.setitem(process_chunked_recording.options, "max_backoff", 60_000)
    audio = wav(1.0)
    upload = chunked(telecaller, call_log, audio, 3)
    chunk_keys = s3_keys(s3_server, s3_app)

    with s3_server.stopped():
        job_id = uploads.complete(upload)
        wait_for(lambda: (row := job(job_id)).state is JobState.RETRYING and row.errors)
        assert ledger.cancel(job_id).state is JobState.CANCELLED
        cancelled = upload_of(upload.id)
        assert (cancelled.status, cancelled.received_indexes()) == (UploadStatus.CANCELLED, [0, 1, 2])
        assert "administrator cancelled" in cancelled.error
    assert s3_keys(s3_server, s3_app) == chunk_keys

    assert ledger.retry(job_id).state is JobState.ENQUEUED
    # (Not run_jobs: the cancelled retry still waits out its backoff in the delay queue, to be skipped.)
    wait_for(lambda: job(job_id).state is JobState.SUCCEEDED, timeout=30)
    done = upload_of(upload.id)
    assert (done.status, done.error) == (UploadStatus.COMPLETED, None)
    with get_storage().open(db.session.get(Recording, done.recording_id).storage_key) as stored:
        assert stored.read() == audio
