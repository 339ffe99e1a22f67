"""tus uploads: a recording's bytes arriving over any number of PATCH requests, straight into the parts of
the multipart upload that builds its final object (see edcrm.recordings.ingest for the bytes' way).

The database is the truth: an upload's offset is its committed parts' sizes plus its staged tail's,
recorded in one transaction once a PATCH's body checked out, never what the storage lists. A PATCH
holds the upload's lock (edcrm.recordings.upload_lock) from before it reads the offset to after it
committed, so two requests never interleave bytes, on any number of hosts (a second PATCH is refused at
once; HEAD waits a moment for the one in flight, see `state`), and no database transaction stays open
while a body arrives.

The whole-file SHA-256 (edcrm.recordings.digest), the first bytes (the type is read from them) and
what raw AMR needs counted for its duration advance with the bytes and are committed with them. When
the offset reaches the length, the tail becomes the last part (a server-side copy) and the upload is
handed to the recordings actor, as the chunk API's `complete` does; a partial upload (concatenation)
is completed into an object of its own instead, for a final upload to copy from.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from flask import current_app

from ...extensions import db
from ...models import CallLog, RecordingUpload, UploadKind, UploadStatus, User
from ...models.recording import ConcatRole, RecordingUploadPart, UploadReason, new_upload_id
from ...models.types import utcnow
from ...storage import NoSuchMultipart, ObjectNotFound, Storage, get_storage
from ...storage.base import Readable
from .. import audio, digest, ingest, job_rules, upload_lock
from ..errors import (
    ChecksumUnsupported,
    InvalidUpload,
    LengthConflict,
    NotARecording,
    OffsetMismatch,
    TooLarge,
    UploadExpired,
    UploadLocked,
    WrongState,
)
from ..uploads import MAX_FILENAME_LENGTH, _enqueue, normalise_sha256

log = logging.getLogger(__name__)

CHECKSUM_ALGORITHMS = ingest.CHECKSUM_ALGORITHMS
DEFAULT_PART_BYTES = 8 * ingest.MIB
DEFAULT_TTL_HOURS = 24
#: How long a HEAD waits for a PATCH in flight to end (s), and how often it looks.
DEFAULT_HEAD_WAIT_S = 5.0
HEAD_POLL_S = 0.05


@dataclass(frozen=True)
class TusState:
    """What a HEAD answers with: the committed offset, the length if known, expiry, metadata."""

    upload_id: str
    offset: int
    length: int | None  # None: deferred (Upload-Defer-Length)
    expires_at: datetime | None
    metadata: dict[str, str | None]  # Upload-Metadata as sent, decoded
    concat: ConcatRole | None
    partial_ids: list[str]  # a final upload's partial uploads, in order
    finished: bool  # offset == length: the recording job is enqueued (a partial: its object is whole)


# -- configuration ----------------------------------------------------------------------------------------


def part_size() -> int:
    """The part size of a new upload (TUS_PART_BYTES, raised as edcrm.recordings.ingest says)."""
    configured = current_app.config.get("TUS_PART_BYTES") or DEFAULT_PART_BYTES
    return ingest.part_size_for(configured, current_app.config["MAX_RECORDING_BYTES"])


def new_expiry() -> datetime:
    """When an upload created or written now expires (TUS_UPLOAD_TTL_HOURS without a PATCH)."""
    hours = current_app.config.get("TUS_UPLOAD_TTL_HOURS", DEFAULT_TTL_HOURS)
    return utcnow() + timedelta(hours=float(hours))


def clean_filename(filename: str | None) -> str:
    """The name as the client gave it, for people to read; it never becomes part of a storage key."""
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    name = "".join(char for char in name if char.isprintable())
    return name[:MAX_FILENAME_LENGTH] or "recording"


def _limit() -> int:
    return current_app.config["MAX_RECORDING_BYTES"]


def _too_large(limit: int) -> TooLarge:
    return TooLarge(f"The recording is larger than the limit of {limit} bytes.", limit=limit)


# -- creation ---------------------------------------------------------------------------------------------


def create(
    user: User,
    call_log: CallLog | None,
    *,
    length: int | None,
    metadata: dict[str, str | None],
    concat: ConcatRole | None = None,
    partials: list[RecordingUpload] | tuple[()] = (),
) -> RecordingUpload:
    """A new tus upload of user's for call_log (checked by the caller), committed.

    call_log is None only for a partial upload (tus-js-client sends no metadata with those). A final
    upload is built at once from its partials' bytes (edcrm.recordings.tus.concat) and handed to the
    recordings actor; its length is theirs."""
    if concat is ConcatRole.FINAL:
        from .concat import create_final  # concat builds on this module

        if length is not None and length != sum(partial.total_size or 0 for partial in partials):
            raise LengthConflict("A final upload's length is the sum of its partial uploads'.", changed=True)
        return create_final(user, call_log, metadata=metadata, partials=list(partials))
    if call_log is None and concat is not ConcatRole.PARTIAL:
        raise InvalidUpload("A tus upload needs the call_log_id of its call in its Upload-Metadata.")
    limit = _limit()
    if length is not None:
        if length < 0:
            raise InvalidUpload("Upload-Length must be a number of bytes.")
        if length > limit:
            raise _too_large(limit)
        if length == 0 and concat is not ConcatRole.PARTIAL:
            raise InvalidUpload("The recording is empty.")
    upload = new_upload(user, call_log, metadata=metadata, length=length, concat=concat)
    db.session.add(upload)
    db.session.commit()
    return upload


def new_upload(
    user: User,
    call_log: CallLog | None,
    *,
    metadata: dict[str, str | None],
    length: int | None,
    concat: ConcatRole | None,
) -> RecordingUpload:
    """The row of a new tus upload (not added to the session)."""
    upload_id = new_upload_id()
    partial = concat is ConcatRole.PARTIAL
    upload = RecordingUpload(
        id=upload_id,
        call_log_id=call_log.id if call_log is not None else None,
        telecaller_id=user.id,
        filename=clean_filename(metadata.get("filename") or metadata.get("name")),
        kind=UploadKind.TUS,
        expected_chunks=1,
        total_size=length,
        sha256=None if partial else normalise_sha256(metadata.get("sha256"), "The sha256 metadata"),
        part_size=part_size(),
        offset=0,
        tail_size=0,
        hashed_bytes=0,
        tus_metadata=dict(metadata),
        concat=concat,
        expires_at=new_expiry(),
    )
    upload.object_key = (
        f"{upload.prefix}partial" if partial or call_log is None else f"recordings/{call_log.id}/{upload_id}"
    )
    return upload


# -- reading ----------------------------------------------------------------------------------------------


def _finished(upload: RecordingUpload) -> bool:
    return upload.total_size is not None and upload.offset == upload.total_size


def _gone(upload: RecordingUpload) -> UploadExpired | None:
    """Why the upload takes and tells nothing more (expired, terminated), or None."""
    if upload.status is UploadStatus.CANCELLED:
        return UploadExpired("The upload was terminated.")
    if (
        upload.status is UploadStatus.RECEIVING
        and upload.expires_at is not None
        and upload.expires_at <= utcnow()
    ):
        return UploadExpired("The upload expired: nothing was sent to it for too long. Start it again.")
    return None


def _require_tus(upload: RecordingUpload) -> None:
    if upload.kind is not UploadKind.TUS:
        raise WrongState("This upload is not a tus upload.")


def state(upload: RecordingUpload) -> TusState:
    """The upload as HEAD tells it: its committed offset. UploadExpired when it expired or was
    terminated.

    A client resumes with a HEAD as soon as its connection broke, often before the server noticed the
    PATCH it cut: that PATCH still holds the upload, and commits what it received once its read fails.
    So while a PATCH holds the upload, HEAD waits for it (up to TUS_HEAD_WAIT_S, never holding the lock
    itself for longer than a look) and answers what it kept, not the offset from before it. An upload
    whose last bytes were committed but whose job could not be sent then (the broker or the storage
    down) is finished now."""
    _require_tus(upload)
    gone = _gone(upload)
    if gone is not None:
        raise gone
    if upload.status is UploadStatus.RECEIVING:
        _settle(upload)
        gone = _gone(upload)
        if gone is not None:
            raise gone
    return _state_of(upload)


def _settle(upload: RecordingUpload) -> None:
    """Wait for a PATCH in flight to end (see state), then finish the upload if it reached its length."""
    wait = float(current_app.config.get("TUS_HEAD_WAIT_S", DEFAULT_HEAD_WAIT_S))
    deadline = time.monotonic() + wait
    db.session.commit()  # what the PATCH commits is read by a new transaction (SQLite: a new snapshot)
    while True:
        try:
            with upload_lock.hold(upload.id), _rolled_back_on_error():
                db.session.refresh(upload)
                if upload.concat is None:
                    finish(upload)
                return
        except UploadLocked:
            if time.monotonic() >= deadline:
                break  # a live PATCH (or one whose client left without a word): its committed offset
            time.sleep(HEAD_POLL_S)
    db.session.commit()
    db.session.refresh(upload)


def _state_of(upload: RecordingUpload) -> TusState:
    return TusState(
        upload_id=upload.id,
        offset=upload.offset,
        length=upload.total_size,
        expires_at=upload.expires_at if upload.status is UploadStatus.RECEIVING else None,
        metadata=dict(upload.tus_metadata or {}),
        concat=upload.concat,
        partial_ids=list(upload.concat_parts or []),
        finished=_finished(upload),
    )


@contextlib.contextmanager
def _rolled_back_on_error() -> Iterator[None]:
    """A failure inside the upload's lock ends its transaction before the lock goes (on SQLite the
    lease's release is a write, which an open write transaction would block)."""
    try:
        yield
    except BaseException:
        db.session.rollback()
        raise


# -- PATCH ------------------------------------------------------------------------------------------------


def _check_writable(upload: RecordingUpload, offset: int) -> None:
    gone = _gone(upload)
    if gone is not None:
        raise gone
    if upload.concat is ConcatRole.FINAL:
        raise WrongState("A final upload is the concatenation of its partial uploads: it takes no bytes.")
    if upload.status is not UploadStatus.RECEIVING:
        raise WrongState(f"The upload is {upload.status.value}: it takes no more bytes.")
    if offset != upload.offset:
        raise OffsetMismatch(
            f"The upload is at offset {upload.offset}, not {offset}: send from there.", offset=upload.offset
        )


def _declared_length(upload: RecordingUpload, length: int | None) -> int | None:
    """The upload's length once this PATCH's Upload-Length (if any) is taken."""
    if length is None:
        return upload.total_size
    if upload.total_size is not None:
        if length != upload.total_size:
            raise LengthConflict(
                f"The upload's length is {upload.total_size} bytes: it cannot change to {length}.",
                changed=True,
            )
        return length
    if length < upload.offset:
        raise LengthConflict(
            f"Upload-Length {length} is less than the {upload.offset} bytes already received.", changed=False
        )
    limit = _limit()
    if length > limit:
        raise _too_large(limit)
    if length == 0 and upload.concat is None:
        raise InvalidUpload("The recording is empty.")
    return length


def append(
    upload: RecordingUpload,
    *,
    offset: int,
    body: Readable,
    length: int | None = None,
    checksum: tuple[str, bytes] | None = None,
    content_length: int | None = None,
) -> TusState:
    """Take a PATCH's body at offset (and a deferred Upload-Length, if it brings one); the new state.

    Refusals keep nothing of the body: OffsetMismatch (the upload is elsewhere), UploadLocked (another
    PATCH is running), TusChecksumMismatch, TooLarge (past the length or MAX_RECORDING_BYTES),
    UploadExpired, WrongState (finished, processing, terminated, a final upload), LengthConflict,
    NotARecording (its first bytes are not audio: the upload fails). A body cut off (its stream raised,
    or it ended short of content_length) keeps what arrived when there is no checksum, then raises
    what cut it (BodyEndedEarly for a short body)."""
    _require_tus(upload)
    if checksum is not None and checksum[0] not in CHECKSUM_ALGORITHMS:
        raise ChecksumUnsupported(
            f"The checksum algorithm {checksum[0]!r} is not supported: use one of "
            f"{', '.join(CHECKSUM_ALGORITHMS)}."
        )
    _check_writable(upload, offset)
    _declared_length(upload, length)  # an early answer; the one that counts comes under the lock
    db.session.commit()  # no transaction stays open while the body arrives
    with upload_lock.hold(upload.id) as lease, _rolled_back_on_error():
        db.session.refresh(upload)
        _check_writable(upload, offset)
        new_length = _declared_length(upload, length)
        end = new_length if new_length is not None else _limit()
        if content_length is not None and offset + content_length > end:
            raise _past_end(end, new_length)
        progress = _Progress(upload)
        storage = get_storage()
        target = _target(upload, storage)
        # Renewed before the body too: pruning never takes an upload a long PATCH is writing.
        upload.expires_at = new_expiry()
        db.session.commit()  # nor while the body arrives under the lock (SQLite: the lease renews)
        try:
            received = ingest.receive(
                body,
                storage,
                target,
                limit=end,
                ends_at_limit=new_length is not None,
                checksum=checksum,
                content_length=content_length,
                observe=progress.observe,
                renew=lease.renew,
                past_limit=lambda: _past_end(end, new_length),
            )
            progress.close(finished=new_length is not None and offset + received.size == new_length)
        except NotARecording:
            _fail(upload)
            raise
        except (NoSuchMultipart, ObjectNotFound):
            raise _stored_bytes_gone() from None
        lease.confirm()  # a writer whose lease ran out (SQLite) commits nothing
        _commit(upload, offset, received, progress, new_length)
        if _finished(upload):
            try:
                finish(upload)
            except (NoSuchMultipart, ObjectNotFound):
                raise _stored_bytes_gone() from None
    if received.cut is not None:
        raise received.cut
    return _state_of(upload)


def _stored_bytes_gone() -> UploadExpired:
    """What a PATCH says when the storage no longer has the upload's parts or tail (pruned)."""
    return UploadExpired("The bytes this upload received are gone: it expired. Start it again.")


def _past_end(end: int, length: int | None) -> TooLarge:
    if length is None:
        return _too_large(end)
    return TooLarge(f"The body goes past the upload's length of {length} bytes.", limit=length)


def _target(upload: RecordingUpload, storage: Storage) -> ingest.Target:
    size = upload.part_size or part_size()
    upload_id, key = upload.id, upload.object_key or ""

    def multipart() -> str:
        return start_multipart(upload_id, key, size, storage)

    return ingest.Target(
        key=key,
        prefix=upload.prefix,
        part_size=size,
        parts=(upload.offset - upload.tail_size) // size,
        tail_size=upload.tail_size,
        multipart=multipart,
    )


def start_multipart(upload_id: str, key: str, size: int, storage: Storage) -> str:
    """The upload's multipart id: started (and committed, so that pruning can abort it) on first need."""
    existing = db.session.execute(
        sa.select(RecordingUpload.multipart_id).where(RecordingUpload.id == upload_id)
    ).scalar_one()
    if existing:
        return existing
    multipart_id = storage.start_multipart(key, part_size=size)
    db.session.execute(
        sa.update(RecordingUpload)
        .where(RecordingUpload.id == upload_id)
        .values(multipart_id=multipart_id)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    return multipart_id


class _Progress:
    """What advances with the bytes and is committed with them: the whole-file SHA-256, the head (the
    first SNIFF_BYTES, whose type is checked as soon as they are in) and raw AMR's frame count."""

    def __init__(self, upload: RecordingUpload):
        # The hash advances only over bytes from 0 on; one that fell behind (no libcrypto to resume
        # with) is left to the finishing job, which hashes the stored object.
        contiguous = upload.hashed_bytes == upload.offset and (upload.hash_state or not upload.offset)
        self.hash = digest.resume(upload.hash_state) if digest.available() and contiguous else None
        self.hashed_bytes = upload.hashed_bytes
        self.head = upload.head or b""
        # Only a whole recording is checked and counted: a partial upload may be any piece of one.
        self.examined = upload.concat is None
        self.counter = audio.counter_of(upload.audio_state)

    def observe(self, offset: int, data: bytes) -> None:
        if self.hash is not None:
            self.hash.update(data)
            self.hashed_bytes = offset + len(data)
        if len(self.head) < audio.SNIFF_BYTES:
            taken = data[: audio.SNIFF_BYTES - len(self.head)]
            self.head += taken
            if len(self.head) == audio.SNIFF_BYTES:
                self._detect()
            data, offset = data[len(taken) :], offset + len(taken)
            if not data:
                return
        if self.counter is not None:
            self.counter.feed(offset, data)

    def close(self, *, finished: bool) -> None:
        """The body is in: a whole recording shorter than the head is checked now."""
        if finished and len(self.head) < audio.SNIFF_BYTES:
            self._detect()

    def _detect(self) -> None:
        if not self.examined:
            return
        try:
            kind = audio.detect(self.head)
        except audio.NotAudio as error:
            raise NotARecording(f"The upload is not a recording: {error}.", reason=str(error)) from None
        if audio.counts_at_ingest(kind):
            self.counter = audio.AmrCounter.start(kind)
            self.counter.feed(0, self.head)

    def audio_state(self) -> dict | None:
        return self.counter.state() if self.counter is not None else None


def _commit(
    upload: RecordingUpload,
    offset: int,
    received: ingest.Received,
    progress: _Progress,
    length: int | None,
) -> None:
    """Record the body's parts and tail, and what advanced with them, in one transaction; then drop the
    tail the body joined into a part."""
    old_tail = ingest.tail_key(upload.prefix, (offset - upload.tail_size) // (upload.part_size or 1) + 1)
    had_tail = upload.tail_size > 0
    values = {
        "offset": offset + received.size,
        "tail_size": received.tail_size,
        "hashed_bytes": progress.hashed_bytes,
        "hash_state": progress.hash.save() if progress.hash is not None else upload.hash_state,
        "head": progress.head or None,
        "audio_state": progress.audio_state(),
        "total_size": length,
        "expires_at": new_expiry(),
        "updated_at": utcnow(),
    }
    try:
        moved: sa.CursorResult = db.session.execute(  # type: ignore[assignment]  # an UPDATE
            sa.update(RecordingUpload)
            .where(
                RecordingUpload.id == upload.id,
                RecordingUpload.offset == offset,
                RecordingUpload.status == UploadStatus.RECEIVING,
            )
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if moved.rowcount != 1:
            raise WrongState("The upload changed while this body arrived: nothing of it was kept.")
        for part in received.parts:
            db.session.add(
                RecordingUploadPart(upload_id=upload.id, number=part.number, size=part.size, etag=part.etag)
            )
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    db.session.refresh(upload)
    new_tail = ingest.tail_key(upload.prefix, received.tail_number)
    if had_tail and (new_tail != old_tail or not received.tail_size):
        _delete_quietly(old_tail)


def _delete_quietly(key: str) -> None:
    try:
        get_storage().delete(key)
    except Exception:  # an orphan object is only wasted space; the upload's pruning removes its folder
        log.exception("could not delete %s", key)


def _fail(upload: RecordingUpload) -> None:
    """Not a recording: the upload fails at once, with the reason its telecaller reads, and what it
    stored goes."""
    db.session.rollback()
    db.session.execute(
        sa.update(RecordingUpload)
        .where(RecordingUpload.id == upload.id, RecordingUpload.status == UploadStatus.RECEIVING)
        .values(status=UploadStatus.FAILED, error=UploadReason.UNUSABLE.value, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    db.session.refresh(upload)
    _drop_stored(upload)


def _drop_stored(upload: RecordingUpload) -> None:
    """Abort the upload's multipart upload and delete its tail (best effort: pruning does it later)."""
    try:
        storage = get_storage()
        if upload.multipart_id and upload.object_key:
            storage.abort_multipart(upload.object_key, upload.multipart_id)
        if upload.tail_size and upload.part_size:
            number = (upload.offset - upload.tail_size) // upload.part_size + 1
            storage.delete(ingest.tail_key(upload.prefix, number))
    except Exception:
        log.exception("could not drop what upload %s stored", upload.id)


# -- reaching the length ----------------------------------------------------------------------------------


def committed_parts(upload_id: str) -> list[RecordingUploadPart]:
    return list(
        db.session.execute(
            sa.select(RecordingUploadPart)
            .where(RecordingUploadPart.upload_id == upload_id)
            .order_by(RecordingUploadPart.number)
        ).scalars()
    )


def finish(upload: RecordingUpload) -> None:
    """The offset reached the length: the staged tail becomes the last part, then the upload goes to
    the recordings actor (a partial upload: its object is completed). Safe to run again: each step
    that is done is skipped."""
    if upload.status is not UploadStatus.RECEIVING or not _finished(upload):
        return
    if upload.tail_size:
        promote_tail(upload)
    if upload.concat is ConcatRole.PARTIAL:
        complete_partial(upload)
        return
    _enqueue(upload, job_rules.PROCESS_CHUNKED_RECORDING)


def promote_tail(upload: RecordingUpload) -> None:
    """The staged tail becomes the next part, copied within the storage (not read back)."""
    storage, size = get_storage(), upload.part_size or part_size()
    number = (upload.offset - upload.tail_size) // size + 1
    tail, tail_size = ingest.tail_key(upload.prefix, number), upload.tail_size
    multipart_id = start_multipart(upload.id, upload.object_key or "", size, storage)
    etag = storage.copy_part(
        upload.object_key or "", multipart_id, number, tail, part_size=size, start=0, stop=tail_size
    )
    try:
        moved: sa.CursorResult = db.session.execute(  # type: ignore[assignment]  # an UPDATE
            sa.update(RecordingUpload)
            .where(RecordingUpload.id == upload.id, RecordingUpload.tail_size == tail_size)
            .values(tail_size=0, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        if moved.rowcount == 1:
            db.session.add(RecordingUploadPart(upload_id=upload.id, number=number, size=tail_size, etag=etag))
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    db.session.refresh(upload)
    _delete_quietly(tail)


def complete_partial(upload: RecordingUpload) -> int:
    """A finished partial upload's object, completed (again: a no-op); its size."""
    if not upload.total_size:
        return 0
    parts = [(part.number, part.etag) for part in committed_parts(upload.id)]
    return get_storage().complete_multipart(upload.object_key or "", upload.multipart_id or "", parts)


# -- DELETE -----------------------------------------------------------------------------------------------


def terminate(upload: RecordingUpload) -> None:
    """The client drops the upload (tus termination): it is cancelled, its multipart upload aborted and
    its tail deleted. Not while a PATCH writes it (UploadLocked), nor once it is being made into a
    recording or is one (WrongState)."""
    _require_tus(upload)
    with upload_lock.hold(upload.id), _rolled_back_on_error():
        db.session.refresh(upload)
        if upload.status in (UploadStatus.PROCESSING, UploadStatus.COMPLETED):
            raise WrongState(f"The upload is {upload.status.value}; it can no longer be deleted.")
        ended: sa.CursorResult = db.session.execute(  # type: ignore[assignment]  # an UPDATE
            sa.update(RecordingUpload)
            .where(
                RecordingUpload.id == upload.id,
                RecordingUpload.status.in_(
                    (UploadStatus.RECEIVING, UploadStatus.FAILED, UploadStatus.CANCELLED)
                ),
            )
            .values(
                status=UploadStatus.CANCELLED,
                error=sa.func.coalesce(RecordingUpload.error, UploadReason.DELETED.value),
                updated_at=utcnow(),
            )
            .execution_options(synchronize_session=False)
        )
        if ended.rowcount != 1:
            db.session.rollback()
            raise WrongState("The upload is being processed; it can no longer be deleted.")
        db.session.commit()
        db.session.refresh(upload)
        # The state changed first: storage failing now leaves a cancelled upload for pruning to clear.
        storage = get_storage()
        if upload.multipart_id and upload.object_key:
            storage.abort_multipart(upload.object_key, upload.multipart_id)
            if upload.concat is ConcatRole.PARTIAL:
                storage.delete(upload.object_key)  # completed already, perhaps
        if upload.tail_size and upload.part_size:
            number = (upload.offset - upload.tail_size) // upload.part_size + 1
            storage.delete(ingest.tail_key(upload.prefix, number))
        db.session.execute(sa.delete(RecordingUploadPart).where(RecordingUploadPart.upload_id == upload.id))
        upload.updated_at = utcnow()
        db.session.commit()
