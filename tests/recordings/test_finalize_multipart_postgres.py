"""8 MiB chunks sent at once on PostgreSQL (its row lock is what serializes them): one multipart upload,
every chunk a part of it, the SHA-256 advanced in order, and finalize completes it into the recording."""

from __future__ import annotations

import hashlib
import io
import random
import threading
import wave

import pytest
import sqlalchemy as sa

from edcrm.extensions import db
from edcrm.models import Branch, CallLog, Recording, RecordingChunk, RecordingUpload, Role, UploadStatus
from edcrm.recordings import uploads
from edcrm.storage import get_storage
from tests.support.jobs import run_jobs
from tests.support.people import make_user
from tests.support.recordings import make_call_log

MIB = 1024 * 1024
PART = 8 * MIB


def noisy_wav(size: int) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(random.Random(size).randbytes((size - 44) // 2 * 2))
    return buffer.getvalue()


def test_chunks_sent_at_once_share_one_multipart_upload(pg_app, pg_worker):
    branch = Branch(name="Kochi")
    db.session.add(branch)
    db.session.commit()
    telecaller = make_user(branch, Role.TELECALLER, email="caller@kochi.test")
    call_log = make_call_log(branch, telecaller)
    data = noisy_wav(4 * PART + MIB)
    chunks = [data[start : start + PART] for start in range(0, len(data), PART)]
    upload = uploads.create_session(
        telecaller,
        call_log,
        filename="c.wav",
        expected_chunks=len(chunks),
        sha256=hashlib.sha256(data).hexdigest(),
    )
    upload_id = upload.id
    barrier, errors = threading.Barrier(len(chunks)), []

    def send(index: int) -> None:
        with pg_app.app_context():
            try:
                target = db.session.get_one(RecordingUpload, upload_id)
                barrier.wait()
                uploads.store_chunk(target, index, io.BytesIO(chunks[index]))
            except BaseException as error:  # handed to the test's thread
                errors.append(error)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=send, args=(index,)) for index in range(len(chunks))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []

    db.session.expire_all()
    upload = db.session.get_one(RecordingUpload, upload_id)
    rows = (
        db.session.execute(sa.select(RecordingChunk).where(RecordingChunk.upload_id == upload_id))
        .scalars()
        .all()
    )
    # One multipart upload, whichever chunk came first; every chunk in it (the last, if it came first,
    # as an object to be copied in). The 8 MiB part size is the one every other chunk had.
    assert upload.multipart_id is not None and upload.part_size == PART
    assert sorted(row.index for row in rows if row.etag is None) in ([], [len(chunks) - 1])
    assert 0 <= upload.hashed_bytes <= len(data) and upload.hashed_bytes % PART in (0, MIB)

    uploads.complete(upload)
    run_jobs(*pg_worker, "recordings")

    assert db.session.get_one(RecordingUpload, upload_id).status is UploadStatus.COMPLETED
    recording = db.session.get_one(CallLog, call_log.id).recording
    assert recording.sha256 == hashlib.sha256(data).hexdigest()
    with get_storage().open(recording.storage_key) as stored:
        assert stored.read() == data


@pytest.mark.parametrize("chunk", [PART, MIB], ids=["parts", "small-chunks"])
def test_two_deliveries_of_one_finalize_at_once_make_one_recording_and_keep_its_object(pg_app, chunk):
    from edcrm.recordings import finalize

    branch = Branch(name="Kochi")
    db.session.add(branch)
    db.session.commit()
    telecaller = make_user(branch, Role.TELECALLER, email="caller@kochi.test")
    call_log = make_call_log(branch, telecaller)
    data = noisy_wav(2 * PART + 4321)
    starts = range(0, len(data), chunk)
    upload = uploads.create_session(telecaller, call_log, filename="c.wav", expected_chunks=len(starts))
    for index, start in enumerate(starts):
        uploads.store_chunk(upload, index, io.BytesIO(data[start : start + chunk]))
    upload_id = upload.id
    db.session.execute(sa.update(RecordingUpload).values(status=UploadStatus.PROCESSING))
    db.session.commit()
    barrier, made, errors = threading.Barrier(2), [], []

    def deliver() -> None:
        with pg_app.app_context():
            try:
                barrier.wait()
                made.append(finalize.finalize_upload(upload_id))
            except BaseException as error:
                errors.append(error)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == [] and len(set(made)) == 1
    db.session.expire_all()
    assert db.session.execute(sa.select(sa.func.count()).select_from(Recording)).scalar_one() == 1
    recording = db.session.get_one(Recording, made[0])
    with get_storage().open(recording.storage_key) as stored:
        assert stored.read() == data
