"""Chunks of at least 5 MiB go straight into the parts of their recording's object, and finalize
completes it where it is: on local storage, on moto's S3 server and on Ceph RGW over HTTP, with real
recordings. What finalize sends is counted on the app's own S3 client: no byte goes up again."""

from __future__ import annotations

import contextlib
import hashlib
import io
import random
import re
import tempfile
import wave
from pathlib import Path

import pytest
import sqlalchemy as sa

from edcrm.actors.recordings import process_chunked_recording
from edcrm.extensions import db
from edcrm.models import CallLog, Job, JobState, Recording, RecordingChunk, RecordingUpload, UploadStatus
from edcrm.models.recording import UploadReason
from edcrm.recordings import audio, finish_multipart, uploads
from edcrm.storage import get_storage
from edcrm.storage.s3 import S3Storage
from tests.support.audio_samples import amr
from tests.support.jobs import run_jobs
from tests.support.recordings import make_call_log, storage_files

MIB = 1024 * 1024
PART = 8 * MIB


def noisy_wav(size: int, seed: int = 1) -> bytes:
    """A real WAV of size bytes (one less if odd: 8 kHz, 16-bit mono) whose samples are random: chunks
    put back in the wrong order, or a part read twice, would not give the same bytes."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(random.Random(seed).randbytes((size - 44) // 2 * 2))
    return buffer.getvalue()


def in_chunks(data: bytes, sizes: list[int]) -> list[bytes]:
    """data cut into chunks of these sizes (the last one takes the rest)."""
    chunks, start = [], 0
    for size in sizes[:-1]:
        chunks.append(data[start : start + size])
        start += size
    return [*chunks, data[start:]]


def send(telecaller, call_log, chunks: list[bytes], order=None, **announced) -> RecordingUpload:
    upload = uploads.create_session(
        telecaller, call_log, filename="call.wav", expected_chunks=len(chunks), **announced
    )
    for index in order if order is not None else range(len(chunks)):
        uploads.store_chunk(upload, index, io.BytesIO(chunks[index]))
    db.session.expire_all()
    return db.session.get(RecordingUpload, upload.id)


def job(job_id: str) -> Job:
    db.session.expire_all()
    return db.session.get(Job, job_id)


def upload_of(upload_id: str) -> RecordingUpload:
    db.session.expire_all()
    return db.session.get(RecordingUpload, upload_id)


def recordings_made() -> int:
    return db.session.execute(sa.select(sa.func.count()).select_from(Recording)).scalar_one()


@pytest.fixture
def call_log(branch, telecaller):
    return make_call_log(branch, telecaller)


class Leftovers:
    """What a storage holds: its objects (keys as the app names them) and multipart uploads in progress."""

    def __init__(self, app, s3_server=None, *, moto: bool = True):
        self.app, self.s3_server, self.moto = app, s3_server, moto
        url = app.config["STORAGE_URL"]
        self.bucket = url.removeprefix("s3://").split("/", 1)[0] if url.startswith("s3://") else None

    def objects(self) -> list[str]:
        if self.bucket is None:
            return [name for name in storage_files(self.app) if not name.startswith(".multipart/")]
        listed = self.s3_server.client().list_objects_v2(Bucket=self.bucket)
        return sorted(item["Key"].removeprefix("edcrm/") for item in listed.get("Contents", []))

    def multiparts(self) -> int:
        if self.bucket is None:
            root = Path(self.app.config["STORAGE_URL"].removeprefix("file://")) / ".multipart"
            return (
                len([p for p in root.iterdir() if re.fullmatch("[0-9a-f]{32}", p.name)])
                if root.exists()
                else 0
            )
        return len(self.s3_server.client().list_multipart_uploads(Bucket=self.bucket).get("Uploads", []))

    def etag(self, key: str) -> str | None:
        if self.bucket is None:
            return None
        return self.s3_server.client().head_object(Bucket=self.bucket, Key=f"edcrm/{key}")["ETag"].strip('"')


@pytest.fixture(params=["local", "s3", "rgw"])
def stored(request, app):
    """The app on local storage, on a bucket of moto's S3 server, or on one of Ceph RGW (which, unlike
    moto, refuses to complete a multipart upload that leaves out a part sent): what its storage holds."""
    if request.param == "local":
        return Leftovers(app)
    # moto's fixture first: its dummy keys and session token would make RGW refuse every request,
    # where RGW's keys (and no token) are fine for moto, which checks none.
    server = request.getfixturevalue("s3_server")
    if request.param == "rgw":
        server = request.getfixturevalue("rgw_s3")
    bucket = server.create_bucket()
    if request.param == "rgw":  # its memory store keeps what a test leaves
        request.addfinalizer(lambda: server.delete_bucket(bucket))
    app.config.update(STORAGE_URL=f"s3://{bucket}/edcrm", S3_ENDPOINT_URL=server.endpoint_url)
    app.extensions.pop("edcrm.storage", None)
    return Leftovers(app, server, moto=request.param == "s3")


@contextlib.contextmanager
def s3_requests():
    """The requests the app's S3 client sends inside the block ("METHOD URL"), in order (none on
    local storage)."""
    sent: list[str] = []
    storage = get_storage()
    if not isinstance(storage, S3Storage):
        yield sent
        return

    def record(request, **kwargs) -> None:
        sent.append(f"{request.method} {request.url}")

    storage.client.meta.events.register("before-send.s3", record)
    try:
        yield sent
    finally:
        storage.client.meta.events.unregister("before-send.s3", record)


# -- straight into parts ------------------------------------------------------------------------------


@pytest.mark.parametrize("order", [None, [2, 0, 3, 1]], ids=["in-order", "out-of-order"])
def test_8_mib_chunks_become_the_recording_without_moving_a_byte_again(
    stored, telecaller, call_log, stub_broker, stub_worker, order
):
    audio_bytes = noisy_wav(3 * PART + 1_234_567)
    chunks = in_chunks(audio_bytes, [PART, PART, PART, 0])
    upload = send(telecaller, call_log, chunks, order, sha256=hashlib.sha256(audio_bytes).hexdigest())
    assert upload.multipart_id and upload.part_size == PART
    rows = db.session.execute(
        sa.select(RecordingChunk).where(RecordingChunk.upload_id == upload.id).order_by(RecordingChunk.index)
    ).scalars()
    assert all(row.etag for row in rows)  # every chunk is a part, none an object
    assert stored.objects() == []
    # In order, the whole file is hashed as it arrives; out of order, as far as chunks are contiguous
    # from the start (2, then 0: hashed, 3, then 1: hashed; 2 and 3 are hashed after complete).
    assert upload.hashed_bytes == (len(audio_bytes) if order is None else 2 * PART)

    job_id = uploads.complete(upload)
    with s3_requests() as sent:
        run_jobs(stub_broker, stub_worker, "recordings")

    assert job(job_id).state is JobState.SUCCEEDED
    recording = db.session.get(CallLog, call_log.id).recording
    assert recording.storage_key == f"recordings/{call_log.id}/{upload.id}"
    assert (recording.content_type, recording.size) == ("audio/wav", len(audio_bytes))
    assert recording.sha256 == hashlib.sha256(audio_bytes).hexdigest()
    assert recording.duration_seconds == pytest.approx((len(audio_bytes) - 44) / 16000, abs=0.001)
    with get_storage().open(recording.storage_key) as object_:
        assert hashlib.sha256(object_.read()).hexdigest() == recording.sha256
    assert stored.objects() == [recording.storage_key] and stored.multiparts() == 0
    assert upload_of(upload.id).status is UploadStatus.COMPLETED
    if stored.bucket is not None:
        assert stored.etag(recording.storage_key).endswith("-4")  # the four parts as they arrived
        # Finalize sent no byte: no part, no object; it completed the upload and read ranges.
        assert not [line for line in sent if line.startswith("PUT ")], sent
        assert len([line for line in sent if line.startswith("POST ") and "uploadId=" in line]) == 1
        if order is None:  # hashed at ingest: only the container was read, a few blocks
            assert len([line for line in sent if line.startswith("GET ")]) <= 4, sent


def test_the_last_chunk_sent_first_is_copied_into_its_part_within_the_storage(
    stored, telecaller, call_log, stub_broker, stub_worker
):
    """The last chunk arrives before the part size is known: it is an object of its own, which
    finalize copies into the last part server-side (UploadPartCopy), not through the worker."""
    audio_bytes = noisy_wav(2 * PART + 3 * MIB, seed=2)
    chunks = in_chunks(audio_bytes, [PART, PART, 0])
    upload = send(telecaller, call_log, chunks, [2, 1, 0])
    assert stored.objects() == [upload.chunk_key(2)]

    uploads.complete(upload)
    with s3_requests() as sent:
        run_jobs(stub_broker, stub_worker, "recordings")

    recording = db.session.get(CallLog, call_log.id).recording
    assert recording.sha256 == hashlib.sha256(audio_bytes).hexdigest()
    with get_storage().open(recording.storage_key) as object_:
        assert object_.read() == audio_bytes
    assert stored.objects() == [recording.storage_key] and stored.multiparts() == 0
    if stored.bucket is not None:
        copies = [line for line in sent if line.startswith("PUT ") and "partNumber=3" in line]
        assert len(copies) == 1, sent  # the copy (x-amz-copy-source), and no other PUT
        assert len([line for line in sent if line.startswith("PUT ")]) == 1, sent


def test_chunks_of_mixed_sizes_still_become_the_recording(
    stored, telecaller, call_log, stub_broker, stub_worker
):
    """A phone that changes its chunk size midway: parts and chunk objects, finalized together."""
    audio_bytes = noisy_wav(3 * PART + 4 * MIB, seed=3)
    chunks = in_chunks(audio_bytes, [PART, PART, 3 * MIB, PART, 0])
    upload = send(telecaller, call_log, chunks, [4, 0, 2, 1, 3])
    etags = db.session.execute(
        sa.select(RecordingChunk.index, RecordingChunk.etag).where(RecordingChunk.upload_id == upload.id)
    ).all()
    # Objects: the 3 MiB one, and the last one, sent before the part size was known.
    assert sorted(index for index, etag in etags if etag is None) == [2, 4]

    job_id = uploads.complete(upload)
    run_jobs(stub_broker, stub_worker, "recordings")

    assert job(job_id).state is JobState.SUCCEEDED
    recording = db.session.get(CallLog, call_log.id).recording
    assert recording.sha256 == hashlib.sha256(audio_bytes).hexdigest() and recording.size == len(audio_bytes)
    with get_storage().open(recording.storage_key) as object_:
        assert object_.read() == audio_bytes
    assert stored.objects() == [recording.storage_key] and stored.multiparts() == 0


def test_small_chunks_keep_their_path(stored, telecaller, call_log, stub_broker, stub_worker):
    audio_bytes = noisy_wav(3 * MIB, seed=4)
    upload = send(telecaller, call_log, in_chunks(audio_bytes, [MIB, MIB, 0]))
    assert upload.multipart_id is None and len(stored.objects()) == 3
    uploads.complete(upload)
    run_jobs(stub_broker, stub_worker, "recordings")
    recording = db.session.get(CallLog, call_log.id).recording
    assert recording.storage_key == f"recordings/{call_log.id}/{upload.id}.wav"
    assert recording.sha256 == hashlib.sha256(audio_bytes).hexdigest()


# -- exactly once, and refusals ---------------------------------------------------------------------------


def test_a_finalize_whose_complete_answer_was_lost_is_retried_into_one_recording(
    stored, telecaller, call_log, stub_broker, stub_worker, monkeypatch
):
    """The storage completes the object but the answer never comes back (the worker dies, the
    connection drops): the retry completes it again (a no-op), and a redelivery after the Recording
    changes nothing."""
    audio_bytes = noisy_wav(2 * PART + 100_000, seed=5)
    upload = send(telecaller, call_log, in_chunks(audio_bytes, [PART, PART, 0]), [1, 2, 0])
    storage = get_storage()
    real_complete, calls = storage.complete_multipart, []

    def complete_then_lose_the_answer(*args, **kwargs):
        size = real_complete(*args, **kwargs)
        calls.append(size)
        if len(calls) == 1:
            raise ConnectionError("the connection dropped before the answer")
        return size

    monkeypatch.setattr(storage, "complete_multipart", complete_then_lose_the_answer)
    job_id = uploads.complete(upload)
    run_jobs(stub_broker, stub_worker, "recordings")

    assert (job(job_id).state, job(job_id).attempts) == (JobState.SUCCEEDED, 2)
    assert calls == [len(audio_bytes)] * 2
    assert recordings_made() == 1
    recording = db.session.get(CallLog, call_log.id).recording
    with get_storage().open(recording.storage_key) as object_:
        assert object_.read() == audio_bytes

    process_chunked_recording.send(upload.id)  # delivered once more (at least once)
    run_jobs(stub_broker, stub_worker, "recordings")
    assert recordings_made() == 1
    assert stored.objects() == [recording.storage_key] and stored.multiparts() == 0


@pytest.mark.parametrize("order", [None, [1, 0, 2]], ids=["hashed-at-ingest", "hashed-after-complete"])
def test_a_wrong_sha256_fails_the_upload_with_the_reason_and_leaves_no_object(
    stored, telecaller, call_log, stub_broker, stub_worker, order
):
    audio_bytes = noisy_wav(2 * PART + 10_000, seed=6)
    upload = send(telecaller, call_log, in_chunks(audio_bytes, [PART, PART, 0]), order, sha256="ab" * 32)
    job_id = uploads.complete(upload)
    run_jobs(stub_broker, stub_worker, "recordings")

    assert (job(job_id).state, job(job_id).attempts) == (JobState.CANCELLED, 1)
    failed = upload_of(upload.id)
    assert (failed.status, failed.error) == (UploadStatus.FAILED, UploadReason.UNUSABLE)
    assert (
        f"SHA-256 is {hashlib.sha256(audio_bytes).hexdigest()}, not the announced"
        in job(job_id).errors[0].error
    )
    assert db.session.get(CallLog, call_log.id).recording is None
    assert not [key for key in stored.objects() if key.startswith("recordings/")]
    assert stored.multiparts() == 0


def test_bytes_that_are_not_audio_fail_the_upload_and_abort_its_parts(
    stored, telecaller, call_log, stub_broker, stub_worker
):
    data = random.Random(7).randbytes(2 * PART)
    upload = send(telecaller, call_log, in_chunks(data, [PART, 0]))
    assert stored.multiparts() == 1
    job_id = uploads.complete(upload)
    run_jobs(stub_broker, stub_worker, "recordings")

    assert job(job_id).state is JobState.CANCELLED
    assert "not a recording" in job(job_id).errors[0].error
    assert upload_of(upload.id).status is UploadStatus.FAILED
    assert stored.multiparts() == 0 and not [k for k in stored.objects() if k.startswith("recordings/")]


def test_a_container_that_does_not_parse_is_deleted_again(
    stored, telecaller, call_log, stub_broker, stub_worker
):
    """It starts like WAV, so the parts are completed; the container is read from the object, and the
    object goes again."""
    data = b"RIFF\x24\x00\x00\x00WAVE" + random.Random(8).randbytes(PART + 1000 - 12)
    upload = send(telecaller, call_log, in_chunks(data, [PART, 0]))
    job_id = uploads.complete(upload)
    run_jobs(stub_broker, stub_worker, "recordings")

    assert job(job_id).state is JobState.CANCELLED
    assert "looks like WAV audio" in job(job_id).errors[0].error
    assert stored.objects() == [] and stored.multiparts() == 0


def test_an_s3_outage_at_finalize_is_retried_and_loses_no_part(
    app, s3_server, telecaller, call_log, stub_broker, stub_worker
):
    bucket = s3_server.create_bucket()
    app.config.update(STORAGE_URL=f"s3://{bucket}/edcrm", S3_ENDPOINT_URL=s3_server.endpoint_url)
    app.extensions.pop("edcrm.storage", None)
    audio_bytes = noisy_wav(PART + 5000, seed=9)
    upload = send(telecaller, call_log, in_chunks(audio_bytes, [PART, 0]))
    with s3_server.stopped():
        job_id = uploads.complete(upload)
        run_jobs(stub_broker, stub_worker, "recordings")
        assert job(job_id).state is JobState.FAILED
        assert upload_of(upload.id).error == UploadReason.SERVER
    from edcrm.jobs import ledger

    ledger.retry(job_id)
    run_jobs(stub_broker, stub_worker, "recordings")
    assert job(job_id).state is JobState.SUCCEEDED
    recording = db.session.get(CallLog, call_log.id).recording
    with get_storage().open(recording.storage_key) as object_:
        assert object_.read() == audio_bytes


# -- removing what was received ---------------------------------------------------------------------------


def test_deleting_an_upload_aborts_its_multipart_upload(stored, client, telecaller, call_log):
    audio_bytes = noisy_wav(2 * PART, seed=10)
    upload = send(telecaller, call_log, in_chunks(audio_bytes, [PART, 0]), [0])
    assert stored.multiparts() == 1
    uploads.cancel(upload)
    assert stored.multiparts() == 0 and stored.objects() == []
    assert upload_of(upload.id).status is UploadStatus.CANCELLED


def test_a_resent_chunk_with_other_bytes_is_the_one_hashed(
    stored, telecaller, call_log, stub_broker, stub_worker
):
    audio_bytes = noisy_wav(2 * PART + 999, seed=11)
    chunks = in_chunks(audio_bytes, [PART, PART, 0])
    upload = uploads.create_session(telecaller, call_log, filename="c.wav", expected_chunks=3)
    uploads.store_chunk(upload, 0, io.BytesIO(chunks[0][:-1] + b"\x01"))  # a bad copy first
    for index in (0, 1, 2):
        uploads.store_chunk(upload, index, io.BytesIO(chunks[index]))
    uploads.complete(upload)
    run_jobs(stub_broker, stub_worker, "recordings")
    recording = db.session.get(CallLog, call_log.id).recording
    assert recording.sha256 == hashlib.sha256(audio_bytes).hexdigest()
    with get_storage().open(recording.storage_key) as object_:
        assert object_.read() == audio_bytes


def test_an_amr_recording_in_parts_has_its_duration(stored, telecaller, call_log, stub_broker, stub_worker):
    data = amr(6 * 60.0)  # 6 minutes of 12.2 kbit/s: 576,006 bytes
    data = data + data[6:] * 10  # 66 minutes, over 6 MiB
    upload = send(telecaller, call_log, in_chunks(data, [5 * MIB, 0]))
    assert upload.multipart_id is not None
    uploads.complete(upload)
    run_jobs(stub_broker, stub_worker, "recordings")
    recording = db.session.get(CallLog, call_log.id).recording
    assert (recording.content_type, recording.duration_seconds) == ("audio/amr", 66 * 60.0)


def test_parts_qualify_only_when_every_chunk_but_the_last_has_the_part_size(app):
    upload = RecordingUpload(expected_chunks=3, part_size=PART)
    assert finish_multipart.parts_qualify(upload, {0: PART, 1: PART, 2: 1})
    assert not finish_multipart.parts_qualify(upload, {0: PART, 1: PART - 1, 2: 1})
    assert not finish_multipart.parts_qualify(upload, {0: PART, 1: PART, 2: PART + 1})
    assert not finish_multipart.parts_qualify(upload, {0: PART, 2: 1})
    assert audio.detect(noisy_wav(100)) is audio.WAV


# -- tus uploads, as the tus engine leaves them -------------------------------------------------------------


def tus_upload(
    telecaller, call_log, data: bytes, *, sha256: str | None, part: int = 5 * MIB
) -> RecordingUpload:
    """A finished tus upload as the tus engine hands it over: its parts committed, its SHA-256 state
    saved over every byte, its head kept, `processing`."""
    from edcrm.models.recording import RecordingUploadPart, UploadKind
    from edcrm.recordings import digest

    storage = get_storage()
    upload = RecordingUpload(
        call_log_id=call_log.id,
        telecaller_id=telecaller.id,
        filename="t.wav",
        kind=UploadKind.TUS,
        expected_chunks=1,
        total_size=len(data),
        offset=len(data),
        part_size=part,
        sha256=sha256,
        head=data[: audio.SNIFF_BYTES],
        status=UploadStatus.PROCESSING,
    )
    db.session.add(upload)
    db.session.flush()
    upload.object_key = f"recordings/{call_log.id}/{upload.id}"
    upload.multipart_id = storage.start_multipart(upload.object_key, part_size=part)
    hasher = digest.ResumableSha256()
    with tempfile.NamedTemporaryFile() as file:
        file.write(data)
        file.flush()
        for number, start in enumerate(range(0, len(data), part), start=1):
            length = min(part, len(data) - start)
            etag = storage.put_part(
                upload.object_key, upload.multipart_id, number, file.name, start, length, part_size=part
            )
            db.session.add(RecordingUploadPart(upload_id=upload.id, number=number, size=length, etag=etag))
            hasher.update(data[start : start + length])
    upload.hash_state, upload.hashed_bytes = hasher.save(), len(data)
    db.session.commit()
    return upload


def test_a_tus_upload_is_completed_into_its_recording(stored, telecaller, call_log):
    from edcrm.recordings import finalize

    data = noisy_wav(11 * MIB, seed=12)
    upload = tus_upload(telecaller, call_log, data, sha256=hashlib.sha256(data).hexdigest())
    with s3_requests() as sent:
        recording_id = finalize.finalize_upload(upload.id)
    recording = db.session.get(Recording, recording_id)
    assert (recording.storage_key, recording.size) == (upload.object_key, len(data))
    assert recording.duration_seconds == pytest.approx((len(data) - 44) / 16000, abs=0.001)
    with get_storage().open(recording.storage_key) as object_:
        assert object_.read() == data
    assert upload_of(upload.id).status is UploadStatus.COMPLETED
    assert stored.objects() == [recording.storage_key] and stored.multiparts() == 0
    if stored.bucket is not None:  # hashed at ingest: no byte read back but the container's
        assert len([line for line in sent if line.startswith("GET ")]) <= 4
    assert finalize.finalize_upload(upload.id) == recording_id  # again: the same, once
    assert recordings_made() == 1


def test_a_tus_upload_whose_sha256_is_wrong_never_becomes_an_object(stored, telecaller, call_log):
    from edcrm.recordings import finalize

    data = noisy_wav(6 * MIB, seed=13)
    upload = tus_upload(telecaller, call_log, data, sha256="cd" * 32)
    with (
        s3_requests() as sent,
        pytest.raises(finalize.UploadUnusable, match="SHA-256"),
    ):
        finalize.finalize_upload(upload.id)
    assert upload_of(upload.id).status is UploadStatus.FAILED
    assert stored.objects() == [] and stored.multiparts() == 0
    if stored.bucket is not None:  # refused before the object could appear: never completed
        assert not [line for line in sent if line.startswith("POST ")]


def test_a_chunk_sent_as_a_part_then_again_as_an_object_leaves_no_part_unjoined(
    stored, telecaller, call_log, stub_broker, stub_worker
):
    """Chunk 2 first goes in as part 3, then is sent again larger than a part (an object): the part
    it left is replaced by the filler, for Ceph RGW and the local backend refuse to leave one out."""
    audio_bytes = noisy_wav(2 * PART + 4 * MIB, seed=14)
    chunks = in_chunks(audio_bytes, [PART, 3 * MIB, 0])
    upload = uploads.create_session(telecaller, call_log, filename="c.wav", expected_chunks=3)
    uploads.store_chunk(upload, 0, io.BytesIO(chunks[0]))
    uploads.store_chunk(upload, 2, io.BytesIO(random.Random(15).randbytes(MIB)))  # part 3
    uploads.store_chunk(upload, 2, io.BytesIO(chunks[2]))  # 9 MiB: an object
    uploads.store_chunk(upload, 1, io.BytesIO(chunks[1]))
    job_id = uploads.complete(upload)
    run_jobs(stub_broker, stub_worker, "recordings")

    assert job(job_id).state is JobState.SUCCEEDED, job(job_id).errors
    recording = db.session.get(CallLog, call_log.id).recording
    with get_storage().open(recording.storage_key) as object_:
        assert object_.read() == audio_bytes
    assert stored.objects() == [recording.storage_key] and stored.multiparts() == 0
