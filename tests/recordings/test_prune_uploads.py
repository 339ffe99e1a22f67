"""The stale-upload pruner: sessions idle past UPLOAD_SESSION_TTL_HOURS go, with their chunks."""

from __future__ import annotations

import io
from datetime import timedelta

import sqlalchemy as sa

from edcrm.actors.maintenance import prune_upload_sessions
from edcrm.extensions import db
from edcrm.models import Job, JobState, RecordingChunk, RecordingUpload, UploadStatus
from edcrm.models.types import utcnow
from edcrm.recordings import pruning, uploads
from tests.support.recordings import make_call_log, storage_files


def open_upload(branch, telecaller, *, chunks: int, idle_hours: float, status=UploadStatus.RECEIVING):
    upload = uploads.create_session(
        telecaller, make_call_log(branch, telecaller), filename="a.wav", expected_chunks=chunks + 1
    )
    for index in range(chunks):
        uploads.store_chunk(upload, index, io.BytesIO(b"chunk %d" % index))
    db.session.execute(
        sa.update(RecordingUpload)
        .where(RecordingUpload.id == upload.id)
        .values(status=status, updated_at=utcnow() - timedelta(hours=idle_hours))
    )
    db.session.commit()
    return upload.id


def test_the_pruner_removes_idle_sessions_and_their_chunks_only(
    app, branch, telecaller, stub_broker, stub_worker
):
    app.config["UPLOAD_SESSION_TTL_HOURS"] = 24
    stale = open_upload(branch, telecaller, chunks=3, idle_hours=25)
    abandoned = open_upload(branch, telecaller, chunks=1, idle_hours=30, status=UploadStatus.CANCELLED)
    fresh = open_upload(branch, telecaller, chunks=2, idle_hours=23)
    busy = open_upload(branch, telecaller, chunks=1, idle_hours=48, status=UploadStatus.PROCESSING)
    assert len(storage_files(app)) == 7

    message = prune_upload_sessions.send()
    stub_broker.join("default", timeout=10_000)
    stub_worker.join()

    db.session.expire_all()
    assert db.session.get(Job, message.message_id).state is JobState.SUCCEEDED
    remaining = set(db.session.execute(sa.select(RecordingUpload.id)).scalars())
    assert remaining == {fresh, busy}
    assert not any(f"uploads/{gone}/" in name for gone in (stale, abandoned) for name in storage_files(app))
    assert len(storage_files(app)) == 3  # fresh's two chunks and the one of the upload being processed
    chunk_rows = db.session.execute(sa.select(RecordingChunk.upload_id)).scalars().all()
    assert set(chunk_rows) == {fresh, busy}


def test_the_pruner_works_in_bounded_batches(app, branch, telecaller):
    ids = {open_upload(branch, telecaller, chunks=1, idle_hours=100) for _ in range(5)}
    assert pruning.prune_stale(ttl_hours=24, batch_size=2) == 5
    assert not ids & set(db.session.execute(sa.select(RecordingUpload.id)).scalars())
    assert storage_files(app) == []


def add_stray_chunk(app, upload_id: str, index: int) -> str:
    """A chunk row and object in an upload, as a chunk that landed after its upload was over left them."""
    from edcrm.storage import get_storage

    key = f"uploads/{upload_id}/chunks/{index:05d}"
    get_storage().save(key, io.BytesIO(b"late chunk"))
    db.session.add(RecordingChunk(upload_id=upload_id, index=index, size=10, sha256="0" * 64))
    db.session.commit()
    return key


def set_state(upload_id: str, *, idle_hours: float, **values) -> None:
    db.session.execute(
        sa.update(RecordingUpload)
        .where(RecordingUpload.id == upload_id)
        .values(updated_at=utcnow() - timedelta(hours=idle_hours), **values)
    )
    db.session.commit()


def test_the_pruner_removes_stray_chunks_of_completed_uploads_and_keeps_the_upload(
    app, branch, telecaller, stub_broker, stub_worker
):
    app.config["UPLOAD_SESSION_TTL_HOURS"] = 24
    done = open_upload(branch, telecaller, chunks=0, idle_hours=30, status=UploadStatus.COMPLETED)
    add_stray_chunk(app, done, 0)
    recent = open_upload(branch, telecaller, chunks=0, idle_hours=1, status=UploadStatus.COMPLETED)
    add_stray_chunk(app, recent, 0)  # may be the finalize's own, about to be removed by it
    set_state(done, idle_hours=30)
    set_state(recent, idle_hours=1)

    prune_upload_sessions.send()
    stub_broker.join("default", timeout=10_000)
    stub_worker.join()

    db.session.expire_all()
    assert db.session.get(RecordingUpload, done).status is UploadStatus.COMPLETED  # its Recording names it
    assert db.session.execute(sa.select(RecordingChunk.upload_id)).scalars().all() == [recent]
    assert storage_files(app) == [f"uploads/{recent}/chunks/00000"]


def test_the_pruner_ends_processing_uploads_whose_job_is_gone(app, branch, telecaller):
    gone = open_upload(branch, telecaller, chunks=2, idle_hours=30, status=UploadStatus.PROCESSING)
    set_state(gone, idle_hours=30, job_id="pruned-long-ago")
    running = open_upload(branch, telecaller, chunks=1, idle_hours=30, status=UploadStatus.PROCESSING)
    db.session.add(Job(id="still-retrying", actor="x", queue="recordings", state=JobState.RETRYING))
    db.session.commit()
    set_state(running, idle_hours=30, job_id="still-retrying")

    assert pruning.prune_strays(ttl_hours=24) == 1

    db.session.expire_all()
    ended = db.session.get(RecordingUpload, gone)
    assert ended.status is UploadStatus.FAILED and "job is gone" in ended.error
    assert db.session.get(RecordingUpload, running).status is UploadStatus.PROCESSING
    assert storage_files(app) == [f"uploads/{running}/chunks/00000"]
