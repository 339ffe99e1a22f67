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
from .types import JSONType, UTCDateTime, str_enum, utcnow

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
    TUS = "tus"


class ConcatRole(enum.StrEnum):
    """tus concatenation: a partial upload is one piece of a final one, which is their concatenation."""

    PARTIAL = "partial"
    FINAL = "final"


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

    # Bytes that go straight into a multipart upload of the final object (tus; chunk API chunks of at
    # least 5 MiB): the storage's multipart id, the key it builds and its fixed part size.
    multipart_id: Mapped[str | None] = mapped_column(sa.String(1024))
    object_key: Mapped[str | None] = mapped_column(sa.String(512))
    part_size: Mapped[int | None] = mapped_column(sa.BigInteger)
    # tus: the bytes received and committed (the parts' sizes plus the staged tail's).
    offset: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default="0")
    # tus: bytes past the last whole part, staged as an object until the next part takes them.
    tail_size: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default="0")
    # The whole-file SHA-256 so far, as resumable state (edcrm.recordings.digest) over the first
    # hashed_bytes bytes, carried from one request to the next, whichever process serves it.
    hash_state: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    hashed_bytes: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default="0")
    # The recording's first bytes (its type is read from them) and what is counted of its audio as the
    # bytes pass, for formats whose duration needs every byte (raw AMR).
    head: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    audio_state: Mapped[dict | None] = mapped_column(JSONType)
    # tus: Upload-Metadata as sent, the concatenation role, a final upload's partial uploads, expiry.
    tus_metadata: Mapped[dict | None] = mapped_column(JSONType)
    concat: Mapped[ConcatRole | None] = mapped_column(str_enum(ConcatRole, "upload_concat"))
    concat_parts: Mapped[list | None] = mapped_column(JSONType)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A lease on the upload for one writer at a time where the database has no advisory locks (SQLite).
    locked_by: Mapped[str | None] = mapped_column(sa.String(64))
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)

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
    # Set when the chunk went straight into the upload's multipart upload as part index + 1 (its ETag);
    # None when it is stored as an object of its own.
    etag: Mapped[str | None] = mapped_column(sa.String(128))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class RecordingUploadPart(Model):
    """One part of an upload's multipart upload, committed: the upload's offset is the sum of these (and
    its tail), never what the storage lists."""

    __tablename__ = "recording_upload_parts"

    upload_id: Mapped[str] = mapped_column(
        sa.ForeignKey("recording_uploads.id", ondelete="CASCADE"), primary_key=True
    )
    number: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)  # 1-based, as S3 counts
    size: Mapped[int] = mapped_column(sa.BigInteger)
    etag: Mapped[str] = mapped_column(sa.String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


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
