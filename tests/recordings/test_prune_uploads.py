"""The stale-upload pruner: sessions idle past UPLOAD_SESSION_TTL_HOURS go, with their chunks."""

from __future__ import annotations

import io
import tempfile
from datetime import timedelta
from pathlib import Path

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


# -- multipart uploads -----------------------------------------------------------------------------------

MIB = 1024 * 1024


def multiparts_in_progress(app) -> int:
    url = app.config["STORAGE_URL"]
    if url.startswith("s3://"):
        from edcrm.storage import get_storage

        storage = get_storage()
        return len(storage.client.list_multipart_uploads(Bucket=storage.bucket).get("Uploads", []))
    root = Path(url.removeprefix("file://")) / ".multipart"
    return len([p for p in root.iterdir() if len(p.name) == 32]) if root.exists() else 0


def tus_upload(branch, telecaller, *, expires_in_hours: float, idle_hours: float = 0) -> str:
    """A tus upload as the tus engine leaves one mid-way: a multipart upload with one part committed and
    a tail staged after it."""
    from edcrm.models.recording import RecordingUploadPart, UploadKind
    from edcrm.recordings.uploads import tail_key
    from edcrm.storage import get_storage

    storage, part = get_storage(), 5 * MIB
    call_log = make_call_log(branch, telecaller)
    upload = RecordingUpload(
        call_log_id=call_log.id,
        telecaller_id=telecaller.id,
        filename="t.wav",
        kind=UploadKind.TUS,
        expected_chunks=1,
        part_size=part,
        offset=part + 10,
        tail_size=10,
        expires_at=utcnow() + timedelta(hours=expires_in_hours),
    )
    db.session.add(upload)
    db.session.flush()
    upload.object_key = f"recordings/{call_log.id}/{upload.id}"
    upload.multipart_id = storage.start_multipart(upload.object_key, part_size=part)
    with tempfile.NamedTemporaryFile() as file:
        file.truncate(part)
        etag = storage.put_part(upload.object_key, upload.multipart_id, 1, file.name, 0, part, part_size=part)
    db.session.add(RecordingUploadPart(upload_id=upload.id, number=1, size=part, etag=etag))
    storage.save(tail_key(upload), io.BytesIO(b"0123456789"))
    db.session.commit()
    set_state(upload.id, idle_hours=idle_hours)
    return upload.id


def chunk_upload_in_parts(branch, telecaller, *, idle_hours: float) -> str:
    upload = uploads.create_session(
        telecaller, make_call_log(branch, telecaller), filename="a.wav", expected_chunks=3
    )
    uploads.store_chunk(upload, 0, io.BytesIO(bytes(5 * MIB)))
    assert db.session.get(RecordingUpload, upload.id).multipart_id is not None
    set_state(upload.id, idle_hours=idle_hours)
    return upload.id


def test_expired_tus_uploads_are_cancelled_and_their_parts_and_tail_removed(app, branch, telecaller):
    app.config["UPLOAD_SESSION_TTL_HOURS"] = 24
    expired = tus_upload(branch, telecaller, expires_in_hours=-1, idle_hours=25)
    # Idle past the session TTL, but its client was told it has until Upload-Expires: it stays.
    promised = tus_upload(branch, telecaller, expires_in_hours=2, idle_hours=30)
    assert multiparts_in_progress(app) == 2 and len(storage_files(app)) > 2

    assert pruning.prune_stale(ttl_hours=24) == 0  # ended now; removed once idle past the TTL again

    db.session.expire_all()
    ended = db.session.get(RecordingUpload, expired)
    assert (ended.status, ended.error) == (UploadStatus.CANCELLED, pruning.EXPIRED)
    assert db.session.get(RecordingUpload, promised).status is UploadStatus.RECEIVING
    assert multiparts_in_progress(app) == 1
    assert not [name for name in storage_files(app) if f"uploads/{expired}/" in name]
    assert [name for name in storage_files(app) if f"uploads/{promised}/tail" in name]


def test_pruning_a_chunk_upload_aborts_its_multipart_upload(app, branch, telecaller):
    stale = chunk_upload_in_parts(branch, telecaller, idle_hours=30)
    fresh = chunk_upload_in_parts(branch, telecaller, idle_hours=1)
    assert multiparts_in_progress(app) == 2

    assert pruning.prune_stale(ttl_hours=24) == 1

    assert set(db.session.execute(sa.select(RecordingUpload.id)).scalars()) == {fresh}
    assert multiparts_in_progress(app) == 1
    assert stale not in "".join(storage_files(app))


def test_on_s3_pruning_aborts_multipart_uploads(app, s3_server, branch, telecaller):
    bucket = s3_server.create_bucket()
    app.config.update(STORAGE_URL=f"s3://{bucket}/edcrm", S3_ENDPOINT_URL=s3_server.endpoint_url)
    app.extensions.pop("edcrm.storage", None)
    chunk_upload_in_parts(branch, telecaller, idle_hours=30)
    expired = tus_upload(branch, telecaller, expires_in_hours=-1)
    assert multiparts_in_progress(app) == 2

    assert pruning.prune_stale(ttl_hours=24) == 1  # the chunk upload; the tus one is ended

    assert multiparts_in_progress(app) == 0
    assert db.session.get(RecordingUpload, expired).status is UploadStatus.CANCELLED
    assert s3_server.client().list_objects_v2(Bucket=bucket).get("Contents", []) == []
