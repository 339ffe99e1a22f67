"""Finishing an upload whose bytes went straight into a multipart upload of its final object (tus, and
chunk API chunks of at least 5 MiB): no byte is read back or sent again, but those the SHA-256 has not
seen yet.

    complete(upload)        called by finalize_upload for every upload with a multipart_id
      1. the type, from the first bytes kept at ingest (`head`): not audio → the multipart is aborted,
         UploadUnusable;
      2. the parts, from the database (RecordingUploadPart rows for tus, RecordingChunk rows with an
         ETag for chunks, number = index + 1; chunks that were stored as objects of their own, sized
         as parts, are first copied into their part within the storage): their sizes must add up to
         the announced total;
      3. the SHA-256, taken up from the state saved at ingest (`hash_state` over `hashed_bytes`): when
         every byte was hashed as it arrived, it is checked against the announced one BEFORE the
         object appears (a mismatch aborts the multipart: nothing is stored);
      4. CompleteMultipartUpload (idempotent: a second run finds the object completed);
      5. the bytes not hashed yet (chunks that arrived out of order, a concatenation's partials after
         the first) are hashed by ranged reads of the object, in order; the duration is read from the
         object by ranged reads (RangedReader: the container is parsed by seeking, a few small
         requests), or taken from what was counted at ingest (raw AMR, `audio_state`); a mismatch or
         bytes that are no audio delete the object again, UploadUnusable;
      6. one transaction commits the Recording (storage_key = the object's key, content_type from
         the type) and marks the upload completed;
      7. finalize then removes what is left of the upload: staged tail, chunk objects, a
         concatenation's partial objects, part and chunk rows.

A transient error (storage or the database unreachable) raises as it is and the job is retried: every
step before 6 can run again (the parts stay until the Recording is committed, and completing a
completed multipart upload returns its object), and a second delivery after 6 finds the Recording.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from typing import NoReturn

import sqlalchemy as sa

from ..extensions import db
from ..jobs import Unrecoverable
from ..models import Recording, RecordingChunk, RecordingUpload, UploadKind
from ..models.recording import RecordingUploadPart, UploadStatus
from ..models.types import utcnow
from ..storage import ObjectNotFound, Storage, get_storage
from ..storage.base import NoSuchMultipart, RangedReader
from . import audio, digest

log = logging.getLogger(__name__)


class UploadUnusable(Unrecoverable):
    """The upload's bytes can never become a recording (not audio, wrong size or checksum)."""


@dataclass(frozen=True)
class Part:
    number: int
    size: int
    etag: str


def complete(upload: RecordingUpload) -> Recording:
    """Make the Recording of a multipart-built upload (see the module's docstring); the Recording."""
    done = db.session.execute(sa.select(Recording).filter_by(upload_id=upload.id)).scalar_one_or_none()
    if done is not None:
        return done
    storage = get_storage()
    key, multipart_id = upload.object_key or "", upload.multipart_id or ""
    if not key or not multipart_id:
        raise Unrecoverable(f"recording upload {upload.id} has no multipart upload")

    kind = _detect(storage, upload)
    parts = _parts(storage, upload)
    size = sum(part.size for part in parts)
    if not parts:
        _refuse_before(storage, upload, f"upload {upload.id} is empty")
    if upload.total_size is not None and size != upload.total_size:
        _refuse_before(
            storage, upload, f"the recording has {size} bytes, not the announced {upload.total_size}"
        )

    hasher, hashed = _hasher(upload, size)
    if hashed == size and upload.sha256 is not None and hasher.hexdigest() != upload.sha256:
        # Every byte was hashed as it arrived: refused before the object appears.
        _refuse_before(
            storage,
            upload,
            f"the recording's SHA-256 is {hasher.hexdigest()}, not the announced {upload.sha256}",
        )

    try:
        stored = storage.complete_multipart(key, multipart_id, [(part.number, part.etag) for part in parts])
    except NoSuchMultipart:
        raise Unrecoverable(f"the multipart upload of recording upload {upload.id} is gone") from None
    if stored != size:  # the parts the database committed are not what the storage joined
        storage.delete(key)
        raise Unrecoverable(f"upload {upload.id}: the storage joined {stored} bytes, its parts are {size}")

    if hashed < size:
        hashed += _hash_range(storage, key, hashed, size, hasher)
        if hashed != size:
            raise Unrecoverable(f"upload {upload.id}: its object has {hashed} bytes, not {size}")
    sha256 = hasher.hexdigest()
    if upload.sha256 is not None and sha256 != upload.sha256:
        _refuse_after(storage, key, f"the recording's SHA-256 is {sha256}, not the announced {upload.sha256}")

    seconds = _duration(storage, upload, kind, key, size)
    return commit_recording(storage, upload, kind, key, size, sha256, seconds)


# -- the steps --------------------------------------------------------------------------------------------


def _detect(storage: Storage, upload: RecordingUpload) -> audio.AudioType:
    """The type, from the first bytes kept at ingest (a tus upload's first PATCH, a chunk upload's
    chunk 0)."""
    try:
        return audio.detect(upload.head or b"")
    except audio.NotAudio as error:
        _refuse_before(storage, upload, f"upload {upload.id} is not a recording: {error}")


def _parts(storage: Storage, upload: RecordingUpload) -> list[Part]:
    """The committed parts, ascending; chunk objects sized as parts are copied into theirs first."""
    if upload.kind is not UploadKind.CHUNKED:
        rows = db.session.execute(
            sa.select(RecordingUploadPart)
            .where(RecordingUploadPart.upload_id == upload.id)
            .order_by(RecordingUploadPart.number)
        ).scalars()
        parts = [Part(row.number, row.size, row.etag) for row in rows]
        if [part.number for part in parts] != list(range(1, len(parts) + 1)):
            raise Unrecoverable(f"recording upload {upload.id} has parts missing")
        return parts
    chunks = list(
        db.session.execute(
            sa.select(RecordingChunk)
            .where(RecordingChunk.upload_id == upload.id)
            .order_by(RecordingChunk.index)
        ).scalars()
    )
    if [chunk.index for chunk in chunks] != list(range(upload.expected_chunks)):
        raise Unrecoverable(f"recording upload {upload.id} is missing chunks")
    for chunk in chunks:
        if chunk.etag is None:  # stored as an object before the part size was known: copied, not read
            try:
                chunk.etag = storage.copy_part(
                    upload.object_key or "",
                    upload.multipart_id or "",
                    chunk.index + 1,
                    upload.chunk_key(chunk.index),
                    part_size=upload.part_size or chunk.size,
                )
            except (ObjectNotFound, NoSuchMultipart):
                raise Unrecoverable(f"a stored part of the upload is gone: chunk {chunk.index}") from None
            db.session.commit()  # a re-run uses the part copied (copying again would do no harm)
    return [Part(chunk.index + 1, chunk.size, chunk.etag or "") for chunk in chunks]


def parts_qualify(upload: RecordingUpload, sizes: dict[int, int]) -> bool:
    """Can chunks of these sizes (by index) be the parts of the upload's multipart upload: every one
    but the last of the part size, the last no larger?"""
    size = upload.part_size
    if not size or len(sizes) != upload.expected_chunks:
        return False
    last = upload.expected_chunks - 1
    return all((chunk == size if index < last else 0 < chunk <= size) for index, chunk in sizes.items())


class _Hashlib:
    """hashlib's SHA-256 where no saved state is taken up (the interface of ResumableSha256 used here)."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()

    def update(self, data: bytes | bytearray) -> None:
        self._digest.update(data)

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def _hasher(upload: RecordingUpload, size: int) -> tuple[_Hashlib | digest.ResumableSha256, int]:
    """The SHA-256 as ingest left it and how many bytes it has seen (0: a new one)."""
    if upload.hash_state and 0 < upload.hashed_bytes <= size and digest.available():
        try:
            return digest.resume(upload.hash_state), upload.hashed_bytes
        except ValueError:
            log.warning("upload %s: its saved SHA-256 state cannot be read; hashing it all", upload.id)
    return _Hashlib(), 0


#: Ranged reads of the bytes left to hash: this many of RANGE_BYTES each in flight while the one before
#: is hashed, so that hashing waits on no single request's latency (a few MiB of memory at most).
RANGES_IN_FLIGHT = 3
RANGE_BYTES = 1024 * 1024
#: What one read of a range's stream takes at most (what a read holds besides the range's buffer).
READ_BYTES = 256 * 1024


def _read_range(storage: Storage, key: str, start: int, stop: int) -> bytearray:
    """Bytes [start, stop) of the object (fewer if it is shorter), in one buffer filled in place."""
    buffer = bytearray(stop - start)
    view, got = memoryview(buffer), 0
    with storage.open_range(key, start, stop) as stream:
        while got < len(buffer) and (piece := stream.read(min(READ_BYTES, len(buffer) - got))):
            view[got : got + len(piece)] = piece
            got += len(piece)
    view.release()
    del buffer[got:]
    return buffer


def _hash_range(storage: Storage, key: str, start: int, stop: int, hasher) -> int:
    """Hash bytes [start, stop) of the object, in order, read by ranges a few at once; the count."""
    starts = iter(range(start, stop, RANGE_BYTES))
    hashed = 0
    with ThreadPoolExecutor(RANGES_IN_FLIGHT, thread_name_prefix="edcrm-hash") as pool:
        window = deque(
            pool.submit(_read_range, storage, key, at, min(at + RANGE_BYTES, stop))
            for at in islice(starts, RANGES_IN_FLIGHT)
        )
        try:
            while window:
                data = window.popleft().result()
                if (at := next(starts, None)) is not None:
                    window.append(pool.submit(_read_range, storage, key, at, min(at + RANGE_BYTES, stop)))
                hasher.update(data)
                hashed += len(data)
        finally:
            for future in window:
                future.cancel()
    return hashed


def _duration(
    storage: Storage, upload: RecordingUpload, kind: audio.AudioType, key: str, size: int
) -> float | None:
    """The duration, counted at ingest (raw AMR) or read from the object by ranged reads; a container
    that does not parse deletes the object again (UploadUnusable)."""
    state = upload.audio_state
    try:
        if state and audio.counts_at_ingest(kind) and audio.counter_of(state) is not None:
            return audio.examine_counted(kind, state, size)
        # Buffered: parsers read a few bytes at a time (an AMR frame header is one byte).
        with io.BufferedReader(RangedReader(storage, key, size)) as reader:
            return audio.examine(kind, reader)
    except audio.NotAudio as error:
        _refuse_after(storage, key, f"upload {upload.id} is not a recording: {error}")


def commit_recording(
    storage: Storage,
    upload: RecordingUpload,
    kind: audio.AudioType,
    key: str,
    size: int,
    sha256: str,
    seconds: float | None,
) -> Recording:
    """Commit the Recording of upload, stored under key, and mark the upload completed; the Recording.
    A second delivery of the job that committed it first wins: its Recording is returned. If the call
    log was deleted meanwhile, the object is removed again and the error raised (the retry cancels)."""
    recording = Recording(
        call_log_id=upload.call_log_id,
        upload_id=upload.id,
        storage_key=key,
        size=size,
        content_type=kind.content_type,
        sha256=sha256,
        duration_seconds=seconds,
    )
    try:
        db.session.add(recording)
        db.session.flush()
        upload.status, upload.recording_id, upload.error = UploadStatus.COMPLETED, recording.id, None
        upload.updated_at = utcnow()
        db.session.commit()
    except sa.exc.IntegrityError:
        db.session.rollback()
        made = db.session.execute(sa.select(Recording).filter_by(upload_id=upload.id)).scalar_one_or_none()
        if made is not None:  # a second delivery of the job, run at the same time, committed it first
            return made
        # The call log was deleted meanwhile: the object goes again, the retry finds the call log gone. (Only
        # then: after another error the commit may have happened, and the object is the recording.)
        storage.delete(key)
        raise
    log.info("recording %s of call log %s: %s bytes, %s", recording.id, upload.call_log_id, size, kind)
    return recording


def _refuse_before(storage: Storage, upload: RecordingUpload, reason: str) -> NoReturn:
    """The upload can never be the recording, known before its object exists: the multipart upload is
    aborted (its parts freed), then UploadUnusable."""
    storage.abort_multipart(upload.object_key or "", upload.multipart_id or "")
    raise UploadUnusable(reason)


def _refuse_after(storage: Storage, key: str, reason: str) -> NoReturn:
    """The completed object is no recording: it is deleted again, then UploadUnusable."""
    storage.delete(key)
    raise UploadUnusable(reason)
