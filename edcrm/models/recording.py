"""Call recordings, and the upload sessions that bring them in from the telecallers' phones.

An upload is chunked (the resumable mobile API: chunks PUT in any order, any number of times) or single
(one multipart POST). Either way its bytes sit in storage under `uploads/{id}/…` until the recordings
actor has assembled them into the final object and committed the Recording; only then are they deleted.
"""

from __future__ import annotations

import enum
import secrets
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import Model, db
from .types import UTCDateTime, str_enum, utcnow

#: The most chunks one upload may announce.
MAX_CHUNKS = 10_000


class UploadStatus(enum.StrEnum):
    RECEIVING = "receiving"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: An upload in one of these states is over: nothing more happens to it but pruning.
FINISHED_UPLOADS = (UploadStatus.COMPLETED, UploadStatus.FAILED, UploadStatus.CANCELLED)


class UploadReason(enum.StrEnum):
    """Why an upload ended without a recording, as its telecaller's app is told: plain words, never a
    path, a host or a traceback. The details are in the job's errors, which admins read on job pages."""

    UNUSABLE = "The file is not audio we can read, or not the file the app announced (size or checksum)."
    GONE = "The upload can no longer become a recording: its call or some of its parts are gone."
    SERVER = (
        "The recording could not be stored because of a problem on the server. "
        "It is kept, so it can be retried."
    )
    QUEUE = "The job queue was unavailable."
    DELETED = "Deleted by the client."
    FAILED = "The recording could not be processed."
    CANCELLED = "The upload was cancelled."
    CANCELLED_BY_OPERATOR = "An administrator cancelled the processing of this recording."


def public_error(status: UploadStatus, error: str | None) -> str | None:
    """What the app may read of an upload's error: the stored one if it is one of UploadReason (those
    written for telecallers), otherwise a plain reason for the status, so that nothing written for an
    operator (a server path, a host, an exception) ever reaches a phone."""
    if error is None:
        return None
    if error in UploadReason._value2member_map_:
        return error
    if status is UploadStatus.CANCELLED:
        return UploadReason.CANCELLED.value
    if status is UploadStatus.FAILED:
        return UploadReason.FAILED.value
    return None


class UploadKind(enum.StrEnum):
    CHUNKED = "chunked"
    SINGLE = "single"


def new_upload_id() -> str:
    """An opaque, unguessable id (it also names the upload's folder in storage)."""
    return secrets.token_hex(16)


class RecordingUpload(Model):
    __tablename__ = "recording_uploads"
    __table_args__ = (
        sa.CheckConstraint(f"expected_chunks BETWEEN 1 AND {MAX_CHUNKS}", name="expected_chunks_range"),
        sa.Index("ix_recording_uploads_status_updated_at", "status", "updated_at"),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True, default=new_upload_id)
    # SET NULL, not CASCADE: an upload whose call was deleted stays, so its chunks can still be removed.
    call_log_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("call_logs.id", ondelete="SET NULL"), index=True
    )
    telecaller_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"))
    filename: Mapped[str] = mapped_column(sa.String(255))
    kind: Mapped[UploadKind] = mapped_column(str_enum(UploadKind, "upload_kind"))
    expected_chunks: Mapped[int] = mapped_column(default=1)
    total_size: Mapped[int | None] = mapped_column(sa.BigInteger)
    sha256: Mapped[str | None] = mapped_column(sa.String(64))  # of the whole file, lowercase hex
    status: Mapped[UploadStatus] = mapped_column(
        str_enum(UploadStatus, "upload_status"), default=UploadStatus.RECEIVING
    )
    job_id: Mapped[str | None] = mapped_column(sa.String(64))
    recording_id: Mapped[int | None] = mapped_column(sa.ForeignKey("recordings.id", ondelete="SET NULL"))
    error: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The last sign of life (creation, a chunk, completion): stale sessions are pruned by it.
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    chunks: Mapped[list[RecordingChunk]] = relationship(
        order_by="RecordingChunk.index", cascade="all, delete-orphan", passive_deletes=True
    )

    @property
    def prefix(self) -> str:
        """The storage folder of everything this upload received."""
        return f"uploads/{self.id}/"

    def chunk_key(self, index: int) -> str:
        return f"{self.prefix}chunks/{index:05d}"

    @property
    def file_key(self) -> str:
        """Where a single (one-shot) upload's file is stored."""
        return f"{self.prefix}file"

    def source_keys(self) -> list[str]:
        """The stored parts of the recording, in order."""
        if self.kind is UploadKind.SINGLE:
            return [self.file_key]
        return [self.chunk_key(index) for index in range(self.expected_chunks)]

    def received_indexes(self) -> list[int]:
        rows = db.session.execute(
            sa.select(RecordingChunk.index)
            .where(RecordingChunk.upload_id == self.id)
            .order_by(RecordingChunk.index)
        )
        return list(rows.scalars())

    def missing_indexes(self, received: list[int] | None = None) -> list[int]:
        have = set(self.received_indexes() if received is None else received)
        return [index for index in range(self.expected_chunks) if index not in have]


class RecordingChunk(Model):
    """One received chunk. Arrival is a set of rows keyed by index, never a counter, so a resent chunk
    counts once and concurrent chunks cannot lose each other's update."""

    __tablename__ = "recording_upload_chunks"

    upload_id: Mapped[str] = mapped_column(
        sa.ForeignKey("recording_uploads.id", ondelete="CASCADE"), primary_key=True
    )
    index: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    size: Mapped[int] = mapped_column(sa.BigInteger)
    sha256: Mapped[str] = mapped_column(sa.String(64))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Recording(Model):
    """A stored recording of a call. A call log's recording is its latest one."""

    __tablename__ = "recordings"

    id: Mapped[int] = mapped_column(primary_key=True)
    call_log_id: Mapped[int] = mapped_column(sa.ForeignKey("call_logs.id", ondelete="CASCADE"), index=True)
    # The upload it came from: the finalize job's idempotency key (a second run finds it done).
    upload_id: Mapped[str] = mapped_column(sa.String(32), unique=True)
    storage_key: Mapped[str] = mapped_column(sa.String(512))
    size: Mapped[int] = mapped_column(sa.BigInteger)
    content_type: Mapped[str] = mapped_column(sa.String(100))
    sha256: Mapped[str] = mapped_column(sa.String(64))
    duration_seconds: Mapped[float | None] = mapped_column(sa.Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
