"""Upload sessions: how a recording's bytes reach storage before the recordings actor finalizes them.

Refusals are `UploadRejected` errors (edcrm.recordings.errors) that say what happened (edcrm.routes.errors
answers them). Chunks
and one-shot files stream through a hashing, counting reader into a spool file on local disk
(edcrm.spool), then into storage only once they are whole and verified, so that a bad copy never
replaces a good one and nothing sits in memory whole. Web and workers share nothing but the database and
the storage, so they may run on different machines.

A chunk is kept in one transaction that first claims the upload's row (an UPDATE that only a
`receiving` upload matches: a row lock on PostgreSQL, the write lock on SQLite), then checks the
running total against MAX_RECORDING_BYTES, stores the object and records its row. So a chunk whose body
finishes after `complete` or DELETE is refused with nothing stored, concurrent chunks cannot pass the
limit together, and `complete` waits for a chunk being recorded instead of racing it.
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import TYPE_CHECKING

import sqlalchemy as sa
from flask import current_app

from .. import jobs, metrics, spool
from ..extensions import db
from ..models import CallLog, RecordingChunk, RecordingUpload, UploadKind, UploadStatus, User
from ..models.recording import MAX_CHUNKS
from ..models.types import utcnow
from ..storage import BLOCK_SIZE, get_storage
from ..storage.base import Readable
from . import job_rules
from .errors import ChecksumMismatch, ChunksMissing, InvalidUpload, QueueUnavailable, TooLarge, WrongState

if TYPE_CHECKING:
    from sqlalchemy.dialects import postgresql, sqlite

log = logging.getLogger(__name__)

SHA256_HEX = re.compile(r"[0-9a-f]{64}")
#: RecordingUpload.filename's column size.
MAX_FILENAME_LENGTH = 255


# -- receiving bytes ------------------------------------------------------------------------------------


class _Verified:
    """Copies a stream into a spool file on disk, counting and hashing, refusing more than limit.
    Storage.save_file then sends it from its path, part by part from disk (no part held in memory)."""

    def __init__(self, source: Readable, limit: int, what: str):
        self.file = spool.named_file("edcrm-upload-")
        self.size, digest = 0, hashlib.sha256()
        try:
            while block := source.read(BLOCK_SIZE):
                self.size += len(block)
                if self.size > limit:
                    raise TooLarge(f"The {what} is larger than the limit of {limit} bytes.", limit=limit)
                digest.update(block)
                self.file.write(block)
        except BaseException:  # too large, or the client went away: nothing is kept
            self.file.close()
            raise
        self.file.flush()
        self.path = self.file.name
        self.sha256 = digest.hexdigest()

    def __enter__(self) -> _Verified:
        return self

    def __exit__(self, *exc_info) -> None:
        self.file.close()


def normalise_sha256(value: str | None, what: str) -> str | None:
    """A client's SHA-256 as lowercase hex, or None; UploadRejected for anything else."""
    if value is None:
        return None
    value = value.strip().lower()
    if not SHA256_HEX.fullmatch(value):
        raise InvalidUpload(f"{what} must be a SHA-256 in hexadecimal (64 characters).")
    return value


def _clean_filename(filename: str | None) -> str:
    """The name as the phone gave it, for people to read; it never becomes part of a storage key."""
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    name = "".join(char for char in name if char.isprintable())
    return name[:MAX_FILENAME_LENGTH] or "recording"


# -- sessions -------------------------------------------------------------------------------------------


def create_session(
    telecaller: User,
    call_log: CallLog,
    *,
    filename: str,
    expected_chunks: int,
    total_size: int | None = None,
    sha256: str | None = None,
) -> RecordingUpload:
    """Open a chunked upload for a call log the telecaller owns (checked by the caller)."""
    limit = current_app.config["MAX_RECORDING_BYTES"]
    if not 1 <= expected_chunks <= MAX_CHUNKS:
        raise InvalidUpload(f"expected_chunks must be between 1 and {MAX_CHUNKS}.")
    if total_size is not None and total_size > limit:
        raise TooLarge(f"The recording is larger than the limit of {limit} bytes.", limit=limit)
    upload = RecordingUpload(
        call_log_id=call_log.id,
        telecaller_id=telecaller.id,
        filename=_clean_filename(filename),
        kind=UploadKind.CHUNKED,
        expected_chunks=expected_chunks,
        total_size=total_size,
        sha256=normalise_sha256(sha256, "sha256"),
    )
    db.session.add(upload)
    db.session.commit()
    return upload


def _require_receiving(upload: RecordingUpload) -> None:
    if upload.status is not UploadStatus.RECEIVING:
        raise WrongState(f"The upload is {upload.status.value}: it takes no more chunks.")


def store_chunk(upload: RecordingUpload, index: int, body: Readable, sha256: str | None = None) -> None:
    """Keep chunk `index` (sent again: replaced). With sha256, a chunk that does not match is refused
    and nothing is kept, an earlier good copy included. The upload's state is checked again once the
    body is in (WrongState: nothing stored), and the chunks received may not add up to more than
    MAX_RECORDING_BYTES (TooLarge: nothing stored; a replaced chunk counts with its new size only)."""
    expected = normalise_sha256(sha256, "X-Chunk-SHA256")
    if not 0 <= index < upload.expected_chunks:
        raise InvalidUpload(
            f"Chunk {index} is out of range: this upload has chunks 0 to {upload.expected_chunks - 1}."
        )
    _require_receiving(upload)  # an early answer; the one that counts comes once the body is in
    upload_id, key = upload.id, upload.chunk_key(index)
    # No transaction (nor pooled connection) stays open while the client sends the body.
    db.session.commit()
    with _Verified(body, current_app.config["MAX_CHUNK_BYTES"], "chunk") as chunk:
        if chunk.size == 0:
            raise InvalidUpload(f"Chunk {index} is empty.")
        if expected is not None and chunk.sha256 != expected:
            raise ChecksumMismatch(
                f"Chunk {index} does not match its X-Chunk-SHA256: received {chunk.sha256}.", index=index
            )
        _keep_chunk(upload_id, index, key, chunk)
        metrics.count_upload("recording_chunk", chunk.size)


def _keep_chunk(upload_id: str, index: int, key: str, chunk: _Verified) -> None:
    """Claim the receiving upload, check the running total, store the object and record its row, all
    in one transaction (see the module's docstring); on any failure nothing new is kept."""
    limit = current_app.config["MAX_RECORDING_BYTES"]
    now, stored, replaced, committing = utcnow(), False, True, False
    try:
        claimed: sa.CursorResult = db.session.execute(  # type: ignore[assignment]  # an UPDATE: a CursorResult
            sa.update(RecordingUpload)
            .where(RecordingUpload.id == upload_id, RecordingUpload.status == UploadStatus.RECEIVING)
            .values(updated_at=now)
            .execution_options(synchronize_session=False)
        )
        if claimed.rowcount != 1:
            status = db.session.execute(
                sa.select(RecordingUpload.status).where(RecordingUpload.id == upload_id)
            ).scalar_one_or_none()
            state = status.value if status is not None else "gone"
            raise WrongState(f"The upload is {state}: it takes no more chunks.")
        received = sa.select(RecordingChunk.index, RecordingChunk.size).where(
            RecordingChunk.upload_id == upload_id
        )
        sizes = dict(db.session.execute(received).all())
        replaced = index in sizes
        others = sum(size for other, size in sizes.items() if other != index)
        if others + chunk.size > limit:
            raise TooLarge(
                f"With chunk {index}, the chunks received would add up to {others + chunk.size} bytes, "
                f"more than the recording limit of {limit} bytes.",
                limit=limit,
            )
        get_storage().save_file(key, chunk.path)
        stored = True
        _record_chunk(upload_id, index, chunk.size, chunk.sha256, now)
        committing = True
        db.session.commit()
    except BaseException:
        db.session.rollback()
        # A replaced chunk's object now holds the new bytes, as verified as the old ones: it stays. So
        # does one whose commit failed: it may have happened (the row then names the object); if not,
        # the chunk sent again replaces it, or remove_received deletes it with the upload.
        if stored and not replaced and not committing:
            _delete_quietly(key)
        raise


def _delete_quietly(key: str) -> None:
    try:
        get_storage().delete(key)
    except Exception:  # the original error matters more; an orphan object is only wasted space
        log.exception("could not delete %s after a chunk that was not recorded", key)


def _record_chunk(upload_id: str, index: int, size: int, sha256: str, now) -> None:
    """Insert or replace the chunk's row (the caller commits)."""
    values = {"upload_id": upload_id, "index": index, "size": size, "sha256": sha256, "received_at": now}
    # Only the dialect in use is imported: sqlite's would cost every PostgreSQL process 0.7 MB.
    statement: postgresql.Insert | sqlite.Insert
    if db.session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        statement = postgresql.insert(RecordingChunk).values(values)
    else:
        from sqlalchemy.dialects import sqlite

        statement = sqlite.insert(RecordingChunk).values(values)
    db.session.execute(
        statement.on_conflict_do_update(
            index_elements=["upload_id", "index"],
            set_={"size": statement.excluded.size, "sha256": statement.excluded.sha256, "received_at": now},
        )
    )


def complete(upload: RecordingUpload) -> str:
    """Hand a fully received upload to the recordings actor; its job id. Idempotent."""
    if upload.status in (UploadStatus.PROCESSING, UploadStatus.COMPLETED) and upload.job_id:
        return upload.job_id
    _require_receiving(upload)
    received = db.session.execute(
        sa.select(RecordingChunk.index, RecordingChunk.size).where(RecordingChunk.upload_id == upload.id)
    ).all()
    missing = upload.missing_indexes([index for index, _ in received])
    if missing:
        raise ChunksMissing(f"{len(missing)} chunk(s) have not arrived yet.", missing=missing)
    size = sum(chunk_size for _, chunk_size in received)
    if upload.total_size is not None and size != upload.total_size:
        raise InvalidUpload(
            f"The chunks add up to {size} bytes, not the announced total_size of {upload.total_size}."
        )
    return _enqueue(upload, job_rules.PROCESS_CHUNKED_RECORDING)


def _enqueue(upload: RecordingUpload, actor_name: str) -> str:
    """receiving → processing with the job's id, committed before the job can run; then sent."""
    # The telecaller's branch rides along, so the ledger files the job under it.
    branch_id = db.session.get_one(User, upload.telecaller_id).branch_id
    job_id = jobs.new_job_id()
    moved: sa.CursorResult = db.session.execute(  # type: ignore[assignment]  # an UPDATE: a CursorResult
        sa.update(RecordingUpload)
        .where(RecordingUpload.id == upload.id, RecordingUpload.status == UploadStatus.RECEIVING)
        .values(status=UploadStatus.PROCESSING, job_id=job_id, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if moved.rowcount != 1:  # a concurrent complete won: its job is the one
        db.session.commit()
        db.session.refresh(upload)
        if upload.job_id:
            return upload.job_id
        raise WrongState(f"The upload is {upload.status.value}.")

    def undo() -> None:
        upload.status, upload.job_id = UploadStatus.RECEIVING, None

    try:
        jobs.send(actor_name, upload.id, branch_id=branch_id, job_id=job_id, undo=undo, refresh=[upload])
    except jobs.BrokerUnavailable as error:
        raise QueueUnavailable("The job queue is unavailable; try again shortly.") from error
    return job_id


def cancel(upload: RecordingUpload) -> None:
    """Drop an upload and the bytes it received (not while the actor is finalizing it). The state
    changes first, in the transaction that removes the chunks: it waits for a chunk being recorded,
    and a chunk whose body is still arriving finds the upload cancelled."""
    ended: sa.CursorResult = db.session.execute(  # type: ignore[assignment]  # an UPDATE: a CursorResult
        sa.update(RecordingUpload)
        .where(
            RecordingUpload.id == upload.id,
            RecordingUpload.status.in_((UploadStatus.RECEIVING, UploadStatus.FAILED, UploadStatus.CANCELLED)),
        )
        .values(
            status=UploadStatus.CANCELLED,
            error=sa.func.coalesce(RecordingUpload.error, "Deleted by the client."),
            updated_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )
    db.session.refresh(upload)
    if ended.rowcount != 1 and upload.status is UploadStatus.PROCESSING:
        db.session.rollback()
        raise WrongState("The upload is being processed; it can no longer be deleted.")
    remove_received(upload)  # a completed upload keeps its state; stray chunks of it go
    db.session.commit()


def remove_received(upload: RecordingUpload) -> None:
    """Delete the upload's chunks (or file) from storage, then their rows. Every key a chunk may have is
    deleted, not only those of rows: a chunk whose commit failed may have left its object."""
    get_storage().delete_many(upload.source_keys())
    db.session.execute(sa.delete(RecordingChunk).where(RecordingChunk.upload_id == upload.id))
    upload.updated_at = utcnow()


def start_single_upload(telecaller: User, call_log: CallLog, fileobj: Readable, filename: str | None) -> str:
    """A whole recording in one request: streamed to storage, then the same actor path; its job id."""
    upload = RecordingUpload(
        call_log_id=call_log.id,
        telecaller_id=telecaller.id,
        filename=_clean_filename(filename),
        kind=UploadKind.SINGLE,
        expected_chunks=1,
    )
    db.session.add(upload)
    db.session.flush()
    try:
        limit = current_app.config["MAX_RECORDING_BYTES"]
        with _Verified(fileobj, limit, "recording") as received:
            if received.size == 0:
                raise InvalidUpload("The file is empty.")
            get_storage().save_file(upload.file_key, received.path)
            metrics.count_upload("recording", received.size)
    except BaseException:
        db.session.rollback()
        raise
    upload.total_size, upload.sha256 = received.size, received.sha256
    db.session.commit()
    try:
        return _enqueue(upload, job_rules.PROCESS_RECORDING_UPLOAD)
    except QueueUnavailable:
        # The request changes nothing: the file and its upload go, and the phone sends it again later.
        get_storage().delete(upload.file_key)
        db.session.delete(upload)
        db.session.commit()
        raise
