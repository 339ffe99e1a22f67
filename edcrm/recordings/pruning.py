"""Housekeeping of upload sessions (the hourly `prune_upload_sessions` actor): tus uploads past their
`Upload-Expires` (TUS_UPLOAD_TTL_HOURS after their last PATCH), sessions idle past their TTL that will
never finish, and chunks left in uploads that are over. Whatever an upload holds goes with it: chunk
objects, a staged tail, and its multipart upload, aborted (S3 keeps the parts of an unfinished multipart
upload, and bills them, until it is)."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from ..extensions import db
from ..models import Job, RecordingChunk, RecordingUpload, UploadKind, UploadStatus
from ..models.types import utcnow
from .uploads import remove_received

#: What an expired tus upload says (its telecaller's app reads `cancelled`, the reason is for admins).
EXPIRED = "Expired: the upload was not finished before its Upload-Expires."


def prune_expired(batch_size: int = 100) -> int:
    """End the tus uploads still receiving past their expiry: the multipart upload is aborted, the
    tail deleted, and the upload `cancelled` (expired), in bounded batches; the count. They go with the
    stale sessions once idle for UPLOAD_SESSION_TTL_HOURS more; until then they answer 410."""
    ended = 0
    while True:
        now = utcnow()
        uploads = (
            db.session.execute(
                sa.select(RecordingUpload)
                .where(
                    RecordingUpload.kind == UploadKind.TUS,
                    RecordingUpload.status == UploadStatus.RECEIVING,
                    RecordingUpload.expires_at < now,
                )
                .order_by(RecordingUpload.expires_at)
                .limit(batch_size)
            )
            .scalars()
            .all()
        )
        for upload in uploads:
            # The state first, conditional on it: a PATCH committing meanwhile keeps its upload.
            moved: sa.CursorResult = db.session.execute(  # type: ignore[assignment]  # an UPDATE
                sa.update(RecordingUpload)
                .where(
                    RecordingUpload.id == upload.id,
                    RecordingUpload.status == UploadStatus.RECEIVING,
                    RecordingUpload.expires_at < now,
                )
                .values(status=UploadStatus.CANCELLED, error=EXPIRED, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            db.session.commit()
            if moved.rowcount == 1:
                db.session.refresh(upload)
                remove_received(upload)  # a crash here leaves a cancelled upload for prune_stale
                db.session.commit()
                ended += 1
        if len(uploads) < batch_size:
            return ended


def prune_stale(ttl_hours: int, batch_size: int = 100) -> int:
    """Remove sessions idle for ttl_hours that will never finish (receiving, failed, cancelled) with
    their chunks, in bounded batches; the count removed (expired tus uploads are ended first:
    prune_expired). Completed ones stay: their Recording names them, and they hold no chunks. A tus
    upload whose Upload-Expires has not passed stays too, however idle: its client was promised it."""
    prune_expired(batch_size)
    now = utcnow()
    cutoff = now - timedelta(hours=ttl_hours)
    stale = (UploadStatus.RECEIVING, UploadStatus.FAILED, UploadStatus.CANCELLED)
    promised = sa.and_(
        RecordingUpload.kind == UploadKind.TUS,
        RecordingUpload.status == UploadStatus.RECEIVING,
        RecordingUpload.expires_at.is_not(None),  # NOT of a NULL would keep every row out
        RecordingUpload.expires_at >= now,
    )
    removed = 0
    while True:
        uploads = (
            db.session.execute(
                sa.select(RecordingUpload)
                .where(RecordingUpload.status.in_(stale), RecordingUpload.updated_at < cutoff, ~promised)
                .order_by(RecordingUpload.updated_at)
                .limit(batch_size)
            )
            .scalars()
            .all()
        )
        for upload in uploads:
            remove_received(upload)  # storage first: a crash here leaves a row to try again
            db.session.delete(upload)
            db.session.commit()
            removed += 1
        if len(uploads) < batch_size:
            return removed


def prune_strays(ttl_hours: int, batch_size: int = 100) -> int:
    """Remove the chunks left in uploads idle for ttl_hours that are over without a session to prune:
    completed ones (a chunk recorded after the finalize removed the others), and processing ones whose
    job the ledger no longer has (pruned past its retention: nothing will finalize them now, so they
    end as failed, and go with the stale sessions later). Bounded batches; the count of uploads."""
    cutoff = utcnow() - timedelta(hours=ttl_hours)
    has_chunks = sa.exists().where(RecordingChunk.upload_id == RecordingUpload.id)
    job_gone = sa.and_(
        RecordingUpload.job_id.is_not(None), ~sa.exists().where(Job.id == RecordingUpload.job_id)
    )
    over = sa.or_(
        RecordingUpload.status == UploadStatus.COMPLETED,
        sa.and_(RecordingUpload.status == UploadStatus.PROCESSING, job_gone),
    )
    cleaned = 0
    while True:
        uploads = (
            db.session.execute(
                sa.select(RecordingUpload)
                .where(over, RecordingUpload.updated_at < cutoff, has_chunks)
                .order_by(RecordingUpload.updated_at)
                .limit(batch_size)
            )
            .scalars()
            .all()
        )
        for upload in uploads:
            remove_received(upload)
            if upload.status is UploadStatus.PROCESSING:
                upload.status = UploadStatus.FAILED
                upload.error = upload.error or "Its job is gone: the recording was never finished."
            db.session.commit()
            cleaned += 1
        if len(uploads) < batch_size:
            return cleaned
