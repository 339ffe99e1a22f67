"""Finalizing an upload: its chunks (or one-shot file) become a stored, checked Recording of its call.

    finalize_upload(upload_id)        run by the recordings actors; safe to run again
      1. the upload, its call log and its parts must exist, else Unrecoverable (cancelled);
      2. if a Recording of this upload exists, an earlier run committed it: only the cleanup is left;
      3. the parts are streamed in order into a temporary file on local disk, hashed and counted as they
         pass (memory stays flat); size and SHA-256 are checked against what the client announced, and
         the audio type and duration are read from that file;
      4. the file is stored under recordings/… (S3: a multipart upload of 8 MiB parts, so chunks of any
         size are gathered into parts of at least 5 MiB; local: a streamed copy and a rename);
      5. one transaction creates the Recording and marks the upload completed;
      6. only then are the chunks deleted.

A transient error (S3 or the database unreachable) raises as it is: the job is retried with backoff and,
the parts being deleted only after step 5, loses nothing. A run that dies between steps 4 and 5 leaves
an object no row names; the retry stores it again under the same key, replacing it.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile

import sqlalchemy as sa

from ..extensions import db
from ..jobs import Unrecoverable
from ..models import CallLog, Recording, RecordingUpload, UploadStatus
from ..models.types import utcnow
from ..storage import BLOCK_SIZE, ObjectNotFound, get_storage
from . import audio
from .uploads import remove_received

log = logging.getLogger(__name__)


class UploadUnusable(Unrecoverable):
    """The upload's bytes can never become a recording (not audio, wrong size or checksum)."""


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
        status = UploadStatus.FAILED if isinstance(error, UploadUnusable) else UploadStatus.CANCELLED
        end(upload_id, status, str(error))
        raise
    _finish(upload, recording)
    return recording.id


def _build(upload: RecordingUpload) -> Recording:
    if upload.call_log_id is None or db.session.get(CallLog, upload.call_log_id) is None:
        remove_received(upload)  # nothing can use them any more
        db.session.commit()
        raise Unrecoverable(f"the call log of recording upload {upload.id} no longer exists")
    storage = get_storage()
    if upload.kind.value == "chunked":
        missing = upload.missing_indexes()
        if missing:
            raise Unrecoverable(f"recording upload {upload.id} is missing chunks {missing[:20]}")
    with tempfile.TemporaryFile() as assembled:
        digest, size = hashlib.sha256(), 0
        for key in upload.source_keys():
            try:
                part = storage.open(key)
            except ObjectNotFound:
                raise Unrecoverable(f"recording upload {upload.id} lost its stored part {key}") from None
            with part:
                while block := part.read(BLOCK_SIZE):
                    digest.update(block)
                    assembled.write(block)
                    size += len(block)
        sha256 = digest.hexdigest()
        if upload.total_size is not None and size != upload.total_size:
            raise UploadUnusable(f"the recording has {size} bytes, not the announced {upload.total_size}")
        if upload.sha256 is not None and sha256 != upload.sha256:
            raise UploadUnusable(f"the recording's SHA-256 is {sha256}, not the announced {upload.sha256}")
        assembled.seek(0)
        try:
            kind = audio.detect(assembled.read(audio.SNIFF_BYTES))
        except audio.NotAudio as error:
            raise UploadUnusable(f"the upload is not a recording: {error}") from None
        seconds = audio.duration(kind, assembled)
        key = f"recordings/{upload.call_log_id}/{upload.id}{kind.extension}"
        assembled.seek(0)
        storage.save(key, assembled)
    recording = Recording(
        call_log_id=upload.call_log_id,
        upload_id=upload.id,
        storage_key=key,
        size=size,
        content_type=kind.content_type,
        sha256=sha256,
        duration_seconds=seconds,
    )
    db.session.add(recording)
    db.session.flush()
    upload.status, upload.recording_id, upload.error = UploadStatus.COMPLETED, recording.id, None
    upload.updated_at = utcnow()
    db.session.commit()
    log.info("recording %s of call log %s: %s bytes, %s", recording.id, upload.call_log_id, size, kind)
    return recording


def _finish(upload: RecordingUpload, recording: Recording) -> None:
    """The Recording is committed: mark the upload completed (a re-run may find it not yet) and drop
    its chunks."""
    if upload.status is not UploadStatus.COMPLETED:
        upload.status, upload.recording_id = UploadStatus.COMPLETED, recording.id
    remove_received(upload)
    db.session.commit()


def end(upload_id: str, status: UploadStatus, error: str | None) -> None:
    """The upload will not become a recording (its job failed for good or was cancelled): say why.
    Its chunks stay until the stale-session pruner removes them, so an operator can still retry."""
    db.session.rollback()
    upload = db.session.get(RecordingUpload, upload_id)
    if upload is None or upload.status is UploadStatus.COMPLETED:
        return
    upload.status, upload.error, upload.updated_at = status, error, utcnow()
    db.session.commit()
