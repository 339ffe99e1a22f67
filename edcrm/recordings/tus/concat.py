"""tus concatenation: a final upload made of finished partial uploads (tus-js-client's parallelUploads).

Each partial upload is a multipart upload of its own, completed into `uploads/{id}/partial` when it
finishes. The final upload builds its recording's object from those objects within the storage: each of
its parts (the same fixed part size as any upload) that lies inside one partial is a ranged server-side
copy of it; a part that spans two partials is read back from them (ranged reads) and sent. The final's
SHA-256 starts from its first partial's (hashed as its bytes arrived); the finishing job hashes the rest
from the completed object. Its first bytes (the type) are its partials' first bytes, checked before
anything is copied.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from flask import current_app

from ... import spool
from ...extensions import db
from ...models import CallLog, RecordingUpload, UploadKind, UploadStatus, User
from ...models.recording import ConcatRole, RecordingUploadPart
from ...storage import BLOCK_SIZE, Storage, get_storage
from ...storage.base import copy_stream
from .. import audio, job_rules, upload_lock
from ..errors import ConcatInvalid, InvalidUpload, NotARecording, TooLarge
from ..uploads import _enqueue
from . import session

log = logging.getLogger(__name__)


def _check_partials(user: User, partials: list[RecordingUpload]) -> None:
    if not partials:
        raise ConcatInvalid("A final upload names at least one partial upload.")
    for partial in partials:
        if partial.kind is not UploadKind.TUS or partial.concat is not ConcatRole.PARTIAL:
            raise ConcatInvalid(f"Upload {partial.id} is not a partial upload.")
        if partial.telecaller_id != user.id:
            raise ConcatInvalid(f"Upload {partial.id} is not one of yours.")
        gone = session._gone(partial)
        if gone is not None or partial.status is not UploadStatus.RECEIVING:
            raise ConcatInvalid(f"The partial upload {partial.id} is gone.")
        if not session._finished(partial):
            raise ConcatInvalid(f"The partial upload {partial.id} is not finished.")


def _head_of(partials: list[RecordingUpload]) -> bytes:
    """The first SNIFF_BYTES of the concatenation: each partial's head is its own first bytes."""
    head = b""
    for partial in partials:
        head += partial.head or b""
        if len(head) >= audio.SNIFF_BYTES or len(partial.head or b"") < (partial.total_size or 0):
            break
    return head[: audio.SNIFF_BYTES]


def create_final(
    user: User, call_log: CallLog | None, *, metadata: dict[str, str | None], partials: list[RecordingUpload]
) -> RecordingUpload:
    """The final upload of partials, its object built and its job enqueued (see the module's docstring).
    ConcatInvalid for partials that cannot be used, NotARecording if they do not start with audio;
    nothing is kept of a final whose building or enqueueing failed."""
    if call_log is None:
        raise InvalidUpload("A tus upload needs the call_log_id of its call in its Upload-Metadata.")
    _check_partials(user, partials)
    total = sum(partial.total_size or 0 for partial in partials)
    limit = current_app.config["MAX_RECORDING_BYTES"]
    if total > limit:
        raise TooLarge(f"The recording is larger than the limit of {limit} bytes.", limit=limit)
    if total == 0:
        raise InvalidUpload("The recording is empty.")
    head = _head_of(partials)
    try:
        audio.detect(head)
    except audio.NotAudio as error:
        raise NotARecording(f"The upload is not a recording: {error}.", reason=str(error)) from None
    for partial in partials:
        # Promoted and completed (a no-op where done), under its lock: its last PATCH may be finishing it.
        with upload_lock.hold(partial.id):
            db.session.refresh(partial)
            session.finish(partial)
    first = partials[0]
    upload = session.new_upload(user, call_log, metadata=metadata, length=total, concat=ConcatRole.FINAL)
    upload.concat_parts = [partial.id for partial in partials]
    upload.head = head
    if first.hash_state and first.hashed_bytes == first.total_size:
        upload.hash_state, upload.hashed_bytes = first.hash_state, first.hashed_bytes
    db.session.add(upload)
    db.session.commit()
    storage = get_storage()
    try:
        _build(upload, partials, storage)
        _enqueue(upload, job_rules.PROCESS_CHUNKED_RECORDING)
    except BaseException:
        _discard(upload, storage)
        raise
    return upload


def _build(upload: RecordingUpload, partials: list[RecordingUpload], storage: Storage) -> None:
    """The final object's parts from the partials' objects; committed with the offset."""
    size = upload.part_size or session.part_size()
    key = upload.object_key or ""
    multipart_id = session.start_multipart(upload.id, key, size, storage)
    spans, start = [], 0
    for partial in partials:
        length = partial.total_size or 0
        if length:
            spans.append((start, start + length, partial.object_key or ""))
        start += length
    total = start
    rows = []
    for number, part_start in enumerate(range(0, total, size), start=1):
        part_stop = min(part_start + size, total)
        pieces = [
            (source, max(part_start, begin) - begin, min(part_stop, end) - begin)
            for begin, end, source in spans
            if begin < part_stop and end > part_start
        ]
        if len(pieces) == 1:
            source, first, stop = pieces[0]
            etag = storage.copy_part(
                key, multipart_id, number, source, part_size=size, start=first, stop=stop
            )
        else:
            etag = _send_joined(storage, key, multipart_id, number, pieces, size)
        rows.append(
            RecordingUploadPart(upload_id=upload.id, number=number, size=part_stop - part_start, etag=etag)
        )
    db.session.add_all(rows)
    upload.offset = total
    db.session.commit()


def _send_joined(
    storage: Storage, key: str, multipart_id: str, number: int, pieces: list[tuple[str, int, int]], size: int
) -> str:
    """A part spanning partials: their ranges read back into a spool file, and sent from it."""
    with spool.named_file("edcrm-part-") as joined:
        length = 0
        for source, start, stop in pieces:
            with storage.open_range(source, start, stop) as stream:
                length += copy_stream(stream, joined, BLOCK_SIZE)
        joined.flush()
        return storage.put_part(key, multipart_id, number, joined.name, 0, length, part_size=size)


def _discard(upload: RecordingUpload, storage: Storage) -> None:
    """A final that could not be built or enqueued goes, with its multipart upload: the client's
    request changed nothing and it may send it again."""
    db.session.rollback()
    try:
        multipart_id = db.session.execute(
            sa.select(RecordingUpload.multipart_id).where(RecordingUpload.id == upload.id)
        ).scalar_one_or_none()
        if multipart_id:
            storage.abort_multipart(upload.object_key or "", multipart_id)
    except Exception:
        log.exception("could not abort the multipart upload of final upload %s", upload.id)
    try:
        db.session.execute(sa.delete(RecordingUploadPart).where(RecordingUploadPart.upload_id == upload.id))
        db.session.execute(sa.delete(RecordingUpload).where(RecordingUpload.id == upload.id))
        db.session.commit()
    except Exception:
        db.session.rollback()
        log.exception("could not remove final upload %s", upload.id)
