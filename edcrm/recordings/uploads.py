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

Chunks of at least MIN_PART_BYTES go straight into a multipart upload of the recording's final object
(`recordings/{call_log_id}/{upload_id}`) as part index + 1, in the same transaction and under the same
claim, so that finalizing copies nothing (edcrm.recordings.finish_multipart). The first such chunk that
is not the last one fixes the upload's part size and starts its multipart upload; a chunk of that size,
and a last chunk no larger, is a part (its ETag on its row); any other chunk (smaller, of another size,
or the last one before the part size is known) is an object of its own, as before. The whole file's
SHA-256 advances over the parts that are contiguous from byte 0 as they arrive (hash_state over
hashed_bytes), from the spool file in hand; finalize hashes the rest by ranged reads. The first bytes of
chunk 0 are kept (`head`): the type is read from them without reading the object.
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
from ..models import CallLog, Recording, RecordingChunk, RecordingUpload, UploadKind, UploadStatus, User
from ..models.recording import MAX_CHUNKS, RecordingUploadPart
from ..models.types import utcnow
from ..storage import BLOCK_SIZE, Storage, get_storage
from ..storage.base import Readable
from . import audio, digest, ingest, job_rules
from .errors import ChecksumMismatch, ChunksMissing, InvalidUpload, QueueUnavailable, TooLarge, WrongState

if TYPE_CHECKING:
    from sqlalchemy.dialects import postgresql, sqlite

log = logging.getLogger(__name__)

SHA256_HEX = re.compile(r"[0-9a-f]{64}")
#: S3's smallest part (but the last): chunks this large or larger can be parts of the final object.
MIN_PART_BYTES = 5 * 1024 * 1024
#: RecordingUpload.filename's column size.
MAX_FILENAME_LENGTH = 255


# -- receiving bytes ------------------------------------------------------------------------------------


class _Verified:
    """Copies a stream into a spool file on disk, counting and hashing, refusing more than limit.
    Storage.save_file then sends it from its path, part by part from disk (no part held in memory)."""

    def __init__(self, source: Readable, limit: int, what: str):
        self.file = spool.named_file("edcrm-upload-")
        self.size, hashed, self.head = 0, hashlib.sha256(), b""
        try:
            while block := source.read(BLOCK_SIZE):
                self.size += len(block)
                if self.size > limit:
                    raise TooLarge(f"The {what} is larger than the limit of {limit} bytes.", limit=limit)
                hashed.update(block)
                if len(self.head) < audio.SNIFF_BYTES:
                    self.head = (self.head + block)[: audio.SNIFF_BYTES]
                self.file.write(block)
        except BaseException:  # too large, or the client went away: nothing is kept
            self.file.close()
            raise
        self.file.flush()
        self.path = self.file.name
        self.sha256 = hashed.hexdigest()

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
        _open_multipart(upload_id, index, chunk.size)
        _keep_chunk(upload_id, index, key, chunk)
        metrics.count_upload("recording_chunk", chunk.size)


def _open_multipart(upload_id: str, index: int, size: int) -> None:
    """Where this chunk is the one that fixes the part size, start the upload's multipart upload and
    commit its id on its own, first (conditional: the first chunk to do so wins, a loser's is aborted
    again), so that every id the storage hands out is recorded: DELETE and pruning abort it whatever
    becomes of the chunk (S3 keeps, and bills, the parts of an upload nobody aborts)."""
    upload = db.session.execute(
        sa.select(
            RecordingUpload.call_log_id,
            RecordingUpload.expected_chunks,
            RecordingUpload.part_size,
            RecordingUpload.multipart_id,
            RecordingUpload.status,
        ).where(RecordingUpload.id == upload_id)
    ).one_or_none()
    db.session.commit()
    if upload is None or upload.multipart_id is not None or upload.status is not UploadStatus.RECEIVING:
        return
    part_size = _part_size_for(upload, index, size)
    if part_size is None:
        return
    storage, key = get_storage(), f"recordings/{upload.call_log_id}/{upload_id}"
    multipart_id = storage.start_multipart(key, part_size=part_size)
    try:
        opened: sa.CursorResult = db.session.execute(  # type: ignore[assignment]  # an UPDATE: a CursorResult
            sa.update(RecordingUpload)
            .where(
                RecordingUpload.id == upload_id,
                RecordingUpload.status == UploadStatus.RECEIVING,
                RecordingUpload.multipart_id.is_(None),
            )
            .values(multipart_id=multipart_id, object_key=key, part_size=part_size)
            .execution_options(synchronize_session=False)
        )
        db.session.commit()
    except BaseException:
        db.session.rollback()
        _abort_quietly(storage, key, multipart_id)
        raise
    if opened.rowcount != 1:  # another chunk opened one first, or the upload is over
        _abort_quietly(storage, key, multipart_id)


def _keep_chunk(upload_id: str, index: int, key: str, chunk: _Verified) -> None:
    """Claim the receiving upload, check the running total, store the chunk (a part of the multipart
    upload, or an object) and record its row, all in one transaction (see the module's docstring); on
    any failure nothing new is kept."""
    limit = current_app.config["MAX_RECORDING_BYTES"]
    now, stored, replaced, committing = utcnow(), False, True, False
    started: tuple[str, str] | None = None
    storage = get_storage()
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
        received = sa.select(RecordingChunk.index, RecordingChunk.size, RecordingChunk.sha256).where(
            RecordingChunk.upload_id == upload_id
        )
        rows = {number: (size, sha256) for number, size, sha256 in db.session.execute(received)}
        replaced = index in rows
        others = sum(size for other, (size, _) in rows.items() if other != index)
        if others + chunk.size > limit:
            raise TooLarge(
                f"With chunk {index}, the chunks received would add up to {others + chunk.size} bytes, "
                f"more than the recording limit of {limit} bytes.",
                limit=limit,
            )
        # Read under the claim: what concurrent chunks committed before it is seen, nothing after.
        upload = db.session.execute(
            sa.select(
                RecordingUpload.call_log_id,
                RecordingUpload.expected_chunks,
                RecordingUpload.part_size,
                RecordingUpload.multipart_id,
                RecordingUpload.object_key,
                RecordingUpload.hash_state,
                RecordingUpload.hashed_bytes,
            ).where(RecordingUpload.id == upload_id)
        ).one()
        values: dict = {}
        part_size = _part_size_for(upload, index, chunk.size)
        etag = None
        if part_size is not None:
            object_key = upload.object_key or f"recordings/{upload.call_log_id}/{upload_id}"
            multipart_id = upload.multipart_id
            if multipart_id is None:  # not opened first (_open_multipart): opened with the chunk
                multipart_id = storage.start_multipart(object_key, part_size=part_size)
                started = (object_key, multipart_id)
                values.update(multipart_id=multipart_id, object_key=object_key, part_size=part_size)
            etag = storage.put_part(
                object_key, multipart_id, index + 1, chunk.path, 0, chunk.size, part_size=part_size
            )
        else:
            storage.save_file(key, chunk.path)
            stored = True
        if index == 0:
            values["head"] = chunk.head
        previous = rows[index][1] if replaced else None
        values.update(_advanced_hash(upload, index, chunk, part_size, previous))
        if values:
            db.session.execute(
                sa.update(RecordingUpload)
                .where(RecordingUpload.id == upload_id)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
        _record_chunk(upload_id, index, chunk.size, chunk.sha256, now, etag)
        committing = True
        db.session.commit()
    except BaseException:
        db.session.rollback()
        # A replaced chunk's object now holds the new bytes, as verified as the old ones: it stays. So
        # does one whose commit failed: it may have happened (the row then names the object); if not,
        # the chunk sent again replaces it, or remove_received deletes it with the upload. A part that
        # was sent stays in the multipart upload unlisted: completing it leaves out what no row names.
        if stored and not replaced and not committing:
            _delete_quietly(key)
        if started is not None and not committing:
            _abort_quietly(storage, *started)
        raise


def _part_size_for(upload: sa.Row, index: int, size: int) -> int | None:
    """The part size this chunk goes in as (it may be the one that fixes it), or None: an object."""
    if upload.call_log_id is None:  # its call is gone: the upload can only end cancelled
        return None
    last = index == upload.expected_chunks - 1
    part_size = upload.part_size
    if part_size is None:
        # The last chunk may be smaller than the others: it fixes nothing, unless it is the only one.
        if size >= MIN_PART_BYTES and (not last or upload.expected_chunks == 1):
            return size
        return None
    if size == part_size or (last and 0 < size <= part_size):
        return part_size
    return None


def _advanced_hash(
    upload: sa.Row, index: int, chunk: _Verified, part_size: int | None, previous: str | None
) -> dict:
    """The upload's SHA-256 state after this chunk: advanced over it where it starts at hashed_bytes
    (a part: every chunk before it has the part size), reset where it replaces hashed bytes with
    others, else unchanged ({})."""
    values: dict = {}
    hashed, state = upload.hashed_bytes, upload.hash_state
    replaces_hashed = upload.part_size and index * upload.part_size < hashed
    if previous is not None and previous != chunk.sha256 and replaces_hashed:
        hashed, state = 0, None  # the bytes hashed are no longer the file's
        values.update(hashed_bytes=0, hash_state=None)
    if part_size is None or index * part_size != hashed or (hashed and not state) or not digest.available():
        return values
    hasher = digest.resume(state)
    with open(chunk.path, "rb") as file:
        while block := file.read(BLOCK_SIZE):
            hasher.update(block)
    return {"hashed_bytes": hashed + chunk.size, "hash_state": hasher.save()}


def _abort_quietly(storage: Storage, key: str, multipart_id: str) -> None:
    try:
        storage.abort_multipart(key, multipart_id)
    except Exception:  # the original error matters more; pruning cannot find an id never recorded
        log.exception("could not abort the multipart upload of %s after a chunk that was not recorded", key)


def _delete_quietly(key: str) -> None:
    try:
        get_storage().delete(key)
    except Exception:  # the original error matters more; an orphan object is only wasted space
        log.exception("could not delete %s after a chunk that was not recorded", key)


def _record_chunk(upload_id: str, index: int, size: int, sha256: str, now, etag: str | None = None) -> None:
    """Insert or replace the chunk's row (the caller commits); etag: it is that part of the multipart
    upload, None: an object of its own."""
    values = {
        "upload_id": upload_id,
        "index": index,
        "size": size,
        "sha256": sha256,
        "etag": etag,
        "received_at": now,
    }
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
            set_={
                "size": statement.excluded.size,
                "sha256": statement.excluded.sha256,
                "etag": statement.excluded.etag,
                "received_at": now,
            },
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
    """Delete what the upload received from storage, then the rows of its chunks and parts: chunk
    objects (every key a chunk may have, not only those of rows: a chunk whose commit failed may have
    left its object), the one-shot file, a staged tail, and its multipart upload (aborted, and its
    object deleted if one was completed) unless a Recording is that object."""
    storage = get_storage()
    keys = list(upload.source_keys())
    if upload.multipart_id and upload.object_key:
        recorded = db.session.execute(
            sa.select(Recording.id).where(Recording.storage_key == upload.object_key).limit(1)
        ).first()
        if recorded is None:
            storage.abort_multipart(upload.object_key, upload.multipart_id)
            keys.append(upload.object_key)  # completed by a run that never committed its Recording
    if upload.tail_size and upload.part_size:
        keys.append(tail_key(upload))
    storage.delete_many(keys)
    db.session.execute(sa.delete(RecordingChunk).where(RecordingChunk.upload_id == upload.id))
    db.session.execute(sa.delete(RecordingUploadPart).where(RecordingUploadPart.upload_id == upload.id))
    upload.updated_at = utcnow()


def tail_key(upload: RecordingUpload) -> str:
    """Where a tus upload's tail is staged: as the start of the next part (edcrm.recordings.ingest)."""
    number = (upload.offset - upload.tail_size) // (upload.part_size or 1) + 1
    return ingest.tail_key(upload.prefix, number)


def start_single_upload(telecaller: User, call_log: CallLog, fileobj: Readable, filename: str | None) -> str:
    """A whole recording in one request (receive_single_upload); its job id."""
    return receive_single_upload(telecaller, call_log, fileobj, filename).job_id or ""


def receive_single_upload(
    telecaller: User, call_log: CallLog, fileobj: Readable, filename: str | None
) -> RecordingUpload:
    """A whole recording in one request: streamed to storage, then the same actor path; the upload,
    `processing` with its job id."""
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
        _enqueue(upload, job_rules.PROCESS_RECORDING_UPLOAD)
    except QueueUnavailable:
        # The request changes nothing: the file and its upload go, and the phone sends it again later.
        get_storage().delete(upload.file_key)
        db.session.delete(upload)
        db.session.commit()
        raise
    return upload
