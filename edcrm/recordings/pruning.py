"""Housekeeping of upload sessions (the hourly `prune_upload_sessions` actor): sessions idle past their
TTL that will never finish, and chunks left in uploads that are over."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from ..extensions import db
from ..models import Job, RecordingChunk, RecordingUpload, UploadStatus
from ..models.types import utcnow
from .uploads import remove_received


def prune_stale(ttl_hours: int, batch_size: int = 100) -> int:
    """Remove sessions idle for ttl_hours that will never finish (receiving, failed, cancelled) with
    their chunks, in bounded batches; the count removed. Completed ones stay: their Recording names
    them, and they hold no chunks."""
    cutoff = utcnow() - timedelta(hours=ttl_hours)
    stale = (UploadStatus.RECEIVING, UploadStatus.FAILED, UploadStatus.CANCELLED)
    removed = 0
    while True:
        uploads = (
            db.session.execute(
                sa.select(RecordingUpload)
                .where(RecordingUpload.status.in_(stale), RecordingUpload.updated_at < cutoff)
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
