"""Finalizing an upload: its chunks (or one-shot file) become a stored, checked Recording of its call.

    finalize_upload(upload_id)        run by the recordings actors; safe to run again
      1. the upload, its call log and its parts must exist, else Unrecoverable (cancelled);
      2. if a Recording of this upload exists, an earlier run committed it: only the cleanup is left;
      3. the parts are streamed in order, fetched ahead by threads; the audio type, read from their
         first bytes, names the final object under recordings/…; they go through Storage.assemble into
         it, hashed and counted as they pass: they are spooled to a local temporary file (in which the
         container is then parsed, by seeking, for its duration) and, on S3, each 8 MiB part of the
         spool goes up as a multipart part as soon as it is complete, read from disk, so chunks of any
         size become parts of at least 5 MiB and memory stays bounded. The total size and SHA-256 the
         client announced, and the container (bytes that only start like audio are no recording),
         are checked before the object appears (a refusal stores nothing and fails the upload, with
         no retry);
      4. one transaction creates the Recording and marks the upload completed;
      5. only then are the chunks deleted.

A transient error (S3 or the database unreachable) raises as it is: the job is retried with backoff and,
the parts being deleted only after step 4, loses nothing. If step 4 fails (the call log deleted meanwhile,
the database gone), the object is removed again; a run killed between steps 3 and 4 leaves an object no
row names, which the retry stores again under the same key, replacing it.

An upload whose bytes went into a multipart upload as they arrived (tus; chunks of at least 5 MiB,
every one but the last of one size) is finished by edcrm.recordings.finish_multipart instead: its
object is completed where it is, nothing is copied. A chunk upload that mixes such parts with chunks
of other sizes (a phone that changed its chunk size midway) cannot be one object of equal parts: its
parts are completed into the upload's object (the places of the other chunks filled with zeros), which
then serves as one more source of the path above (ranged reads, in chunk order) and is deleted with
the chunks.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import queue
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from itertools import chain, islice
from typing import IO, BinaryIO

import sqlalchemy as sa

from .. import spool
from ..extensions import db
from ..jobs import Unrecoverable
from ..models import CallLog, Recording, RecordingChunk, RecordingUpload, UploadKind, UploadStatus
from ..models.recording import ConcatRole, UploadReason
from ..models.types import utcnow
from ..storage import BLOCK_SIZE, ObjectNotFound, Storage, get_storage
from ..storage.base import NoSuchMultipart
from . import audio, finish_multipart
from .finish_multipart import UploadUnusable
from .uploads import remove_received

log = logging.getLogger(__name__)

__all__ = ["PartsReader", "UploadUnusable", "end", "finalize_upload"]

#: A source of an assembled recording: a stored object, or bytes [start, stop) of one.
Source = str | tuple[str, int, int]


def finalize_upload(upload_id: str) -> int:
    """Make upload_id's Recording (or find the one an earlier run made); its id."""
    upload = db.session.get(RecordingUpload, upload_id)
    if upload is None:
        raise Unrecoverable(f"recording upload {upload_id} does not exist")
    done = db.session.execute(sa.select(Recording).filter_by(upload_id=upload_id)).scalar_one_or_none()
    if done is not None:
        _finish(upload, done)
        return done.id
    if upload.status is UploadStatus.RECEIVING:
        raise Unrecoverable(f"recording upload {upload_id} was never completed by its client")
    if upload.status is not UploadStatus.PROCESSING:  # an operator retries a failed or cancelled job
        upload.status, upload.error = UploadStatus.PROCESSING, None
        db.session.commit()
    try:
        recording = _build(upload)
    except Unrecoverable as error:
        # The phone's reason is written with the state, in one commit: a client polling the upload never
        # sees it failed with no reason it can read. The details go to the job's errors, for operators.
        if isinstance(error, UploadUnusable):
            end(upload_id, UploadStatus.FAILED, UploadReason.UNUSABLE.value)
        else:
            end(upload_id, UploadStatus.CANCELLED, UploadReason.GONE.value)
        raise
    _finish(upload, recording)
    return recording.id


def _build(upload: RecordingUpload) -> Recording:
    if upload.call_log_id is None or db.session.get(CallLog, upload.call_log_id) is None:
        remove_received(upload)  # nothing can use them any more
        db.session.commit()
        raise Unrecoverable(f"the call log of recording upload {upload.id} no longer exists")
    if upload.kind is UploadKind.CHUNKED:
        missing = upload.missing_indexes()
        if missing:
            raise Unrecoverable(f"recording upload {upload.id} is missing chunks {missing[:20]}")
    if upload.multipart_id and upload.object_key:
        if upload.kind is not UploadKind.CHUNKED or _chunks_are_parts(upload):
            return finish_multipart.complete(upload)
        return _assemble(upload, _mixed_sources(upload))
    return _assemble(upload, list(upload.source_keys()))


def _chunk_sizes(upload: RecordingUpload) -> dict[int, int]:
    rows = db.session.execute(
        sa.select(RecordingChunk.index, RecordingChunk.size).where(RecordingChunk.upload_id == upload.id)
    )
    return {index: size for index, size in rows}


def _chunks_are_parts(upload: RecordingUpload) -> bool:
    """Can the chunks be the parts of the upload's object as they are: every one but the last of its
    part size (those that went into the multipart upload are; those stored as objects before the part
    size was known are copied into theirs within the storage)?"""
    return finish_multipart.parts_qualify(upload, _chunk_sizes(upload))


def _mixed_sources(upload: RecordingUpload) -> list[Source]:
    """The sources, in chunk order, of a chunk upload whose parts and chunk objects cannot be one
    object of equal parts (a chunk of another size between them). Parts cannot be read before their
    upload is completed, and every backend joins parts 1 to n of the part size, and every part sent:
    the chunks that are not parts are filled in with a part of zeros (the rare irregular upload pays
    their size once), the upload is completed into its object, and each part chunk is the range of its
    place there; the other chunks are their objects. A second run finds the object completed."""
    storage = get_storage()
    chunks = db.session.execute(
        sa.select(RecordingChunk.index, RecordingChunk.size, RecordingChunk.etag)
        .where(RecordingChunk.upload_id == upload.id)
        .order_by(RecordingChunk.index)
    ).all()
    key, multipart_id, part_size = upload.object_key or "", upload.multipart_id or "", upload.part_size or 0
    if not storage.exists(key):
        parts: list[tuple[int, str]] = []
        with spool.named_file("edcrm-filler-") as filler:
            filler.truncate(part_size)  # sparse: zeros that take no disk
            # Every number a chunk may have been sent as is joined (Ceph RGW and the local backend
            # refuse to leave out a part that was sent: a chunk sent as a part, then again as an object).
            for index, _, etag in chunks:
                if etag is None:
                    etag = storage.put_part(
                        key, multipart_id, index + 1, filler.name, 0, part_size, part_size=part_size
                    )
                parts.append((index + 1, etag))
        try:
            storage.complete_multipart(key, multipart_id, parts)
        except NoSuchMultipart:
            raise Unrecoverable(f"the multipart upload of recording upload {upload.id} is gone") from None
    return [
        (key, index * part_size, index * part_size + size) if etag is not None else upload.chunk_key(index)
        for index, size, etag in chunks
    ]


def _assemble(upload: RecordingUpload, keys: list[Source]) -> Recording:
    storage = get_storage()
    largest = db.session.execute(
        sa.select(sa.func.max(RecordingChunk.size)).where(RecordingChunk.upload_id == upload.id)
    ).scalar()
    with spool.named_file("edcrm-recording-") as copy:
        with PartsReader(storage, keys, largest) as parts:
            # The type, from the first bytes, names the final object: known before anything is stored.
            first = parts.read(BLOCK_SIZE)
            kind = _detect(first[: audio.SNIFF_BYTES], upload.id)
            key = f"recordings/{upload.call_log_id}/{upload.id}{kind.extension}"

            seconds: list[float | None] = []

            def verify() -> None:  # before the object appears: a refused upload stores nothing
                if upload.total_size is not None and parts.size != upload.total_size:
                    raise UploadUnusable(
                        f"the recording has {parts.size} bytes, not the announced {upload.total_size}"
                    )
                if upload.sha256 is not None and parts.sha256() != upload.sha256:
                    raise UploadUnusable(
                        f"the recording's SHA-256 is {parts.sha256()}, not the announced {upload.sha256}"
                    )
                seconds.append(_examine(kind, copy, upload.id))  # the whole file is on disk by now

            blocks = chain([first], iter(lambda: parts.read(BLOCK_SIZE), b""))
            size = storage.assemble(key, blocks, copy, verify)
        sha256 = parts.sha256()
    return finish_multipart.commit_recording(storage, upload, kind, key, size, sha256, seconds[0])


def _open_part(storage: Storage, key: Source) -> BinaryIO:
    try:
        if isinstance(key, tuple):
            name, start, stop = key
            return storage.open_range(name, start, stop)
        return storage.open(key)
    except ObjectNotFound:
        raise Unrecoverable(f"a stored part of the upload is gone: {key}") from None


def _read_part(storage: Storage, key: Source) -> bytes:
    with _open_part(storage, key) as part:
        return part.read()


def _detect(head: bytes, upload_id: str) -> audio.AudioType:
    """The audio type of a recording that starts with head; UploadUnusable if it is not audio."""
    try:
        return audio.detect(head)
    except audio.NotAudio as error:
        raise UploadUnusable(f"upload {upload_id} is not a recording: {error}") from None


def _examine(kind: audio.AudioType, spool: IO[bytes], upload_id: str) -> float | None:
    """The duration of the spooled recording, parsed as kind (read by seeking in the file on disk);
    UploadUnusable if it only starts like audio: a container that does not parse, no audio in it, or
    less data than its header announces."""
    try:
        return audio.examine(kind, spool)
    except audio.NotAudio as error:
        raise UploadUnusable(f"upload {upload_id} is not a recording: {error}") from None


class PartsReader:
    """The parts of an upload as one stream, in order, for Storage.assemble.

    Small chunks (at least two fit in FETCH_BUDGET) are fetched whole by threads, ahead of the ones
    being stored, so that the latency of their many requests overlaps the upload. Larger parts (chunks
    up to MAX_CHUNK_BYTES, a one-shot file) are read one after the other, block by block, two blocks
    ahead: their bytes, not their requests, take the time. Memory stays bounded whatever the size of the
    recording or of its chunks. What passes is counted and hashed.
    """

    #: 2 MiB (two 1 MiB chunks in flight): fetching further ahead made finalize no faster on the
    #: benchmark (bench/recordings.py: 4, 6 and 8 MiB took as long), and cost the worker 4 MB more at its
    #: peak.
    FETCH_BUDGET = 2 * 1024 * 1024
    MAX_FETCHERS = 6
    _END = object()

    def __init__(self, storage: Storage, keys: list[Source], largest_part: int | None = None):
        self.size, self._digest = 0, hashlib.sha256()
        fetchers = min(self.MAX_FETCHERS, self.FETCH_BUDGET // max(largest_part or self.FETCH_BUDGET, 1))
        whole = len(keys) > 1 and fetchers >= 2
        self._blocks: queue.Queue = queue.Queue(maxsize=2)
        self._pending = b""
        self._stop = threading.Event()
        fetch = functools.partial(self._fetch_whole, fetchers=fetchers) if whole else self._stream
        self._thread = threading.Thread(target=self._fetch, args=(fetch, storage, keys), daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._blocks.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _fetch(
        self, fetch: Callable[[Storage, list[Source]], bool], storage: Storage, keys: list[Source]
    ) -> None:
        """Run fetch (False if the reader stopped it), then hand over the end, or fetch's error."""
        try:
            if fetch(storage, keys):
                self._put(self._END)
        except BaseException as error:  # handed to the reader, which raises it in the job's thread
            self._put(error)

    def _stream(self, storage: Storage, keys: list[Source]) -> bool:
        """Each part in turn, block by block."""
        for key in keys:
            with _open_part(storage, key) as part:
                while block := part.read(BLOCK_SIZE):
                    if not self._put(block):
                        return False
        return True

    def _fetch_whole(self, storage: Storage, keys: list[Source], *, fetchers: int) -> bool:
        """Whole parts, `fetchers` of them requested at once, handed over in order."""
        with ThreadPoolExecutor(fetchers, thread_name_prefix="edcrm-fetch") as pool:
            upcoming = iter(keys)
            window = deque(pool.submit(_read_part, storage, key) for key in islice(upcoming, fetchers))
            while window:
                data = window.popleft().result()
                if (key := next(upcoming, None)) is not None:
                    window.append(pool.submit(_read_part, storage, key))
                if not self._put(data):
                    for future in window:
                        future.cancel()
                    return False
        return True

    def read(self, size: int = -1) -> bytes:
        pieces, have = [self._pending] if self._pending else [], len(self._pending)
        while size < 0 or have < size:
            item = self._blocks.get()
            if item is self._END:
                self._blocks.put(item)  # later reads see the end too
                break
            if isinstance(item, BaseException):
                raise item
            pieces.append(item)
            have += len(item)
        data = b"".join(pieces)
        if 0 <= size < len(data):
            data, self._pending = data[:size], data[size:]
        else:
            self._pending = b""
        self.size += len(data)
        self._digest.update(data)
        return data

    def sha256(self) -> str:
        return self._digest.hexdigest()

    def __enter__(self) -> PartsReader:
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()


def _finish(upload: RecordingUpload, recording: Recording) -> None:
    """The Recording is committed: mark the upload completed (a re-run may find it not yet) and drop
    its chunks."""
    if upload.status is not UploadStatus.COMPLETED:
        upload.status, upload.recording_id = UploadStatus.COMPLETED, recording.id
    remove_received(upload)
    db.session.commit()
    if upload.concat is ConcatRole.FINAL:
        _remove_partials(upload)


def _remove_partials(upload: RecordingUpload) -> None:
    """A concatenation's partial objects are in its recording now: they go (their rows stay until
    they expire, so that a client asking about them is told they are finished)."""
    partials = db.session.execute(
        sa.select(RecordingUpload.object_key).where(RecordingUpload.id.in_(upload.concat_parts or []))
    ).scalars()
    get_storage().delete_many([key for key in partials if key])


def end(upload_id: str, status: UploadStatus, error: str | None) -> None:
    """The upload will not become a recording (its job failed for good or was cancelled): say why.
    Its chunks stay until the stale-session pruner removes them, so an operator can still retry."""
    db.session.rollback()
    upload = db.session.get(RecordingUpload, upload_id)
    if upload is None or upload.status is UploadStatus.COMPLETED:
        return
    upload.status, upload.error, upload.updated_at = status, error, utcnow()
    db.session.commit()
