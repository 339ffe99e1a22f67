"""The recordings actors, on queue `recordings`: an upload (chunked or one-shot) becomes a Recording.

Both run edcrm.recordings.finalize, which is safe to run again. When a job's retries are exhausted
(S3 down for longer than the backoff), `recording_upload_exhausted` marks the upload failed; its
chunks stay, so an operator can retry the job once storage is back.

What the upload then says (its `error`, which the telecaller's app reads) is a plain reason chosen
from the type of the error that ended it (UploadReason); the error itself, with its traceback, is in
the job's errors, for admins.
"""

from __future__ import annotations

import contextlib

import sqlalchemy as sa

from ..extensions import db
from ..jobs import Unrecoverable, actor
from ..jobs.subjects import RECORDING_UPLOAD, Rules, register
from ..models import RecordingUpload, UploadStatus
from ..models.recording import UploadReason
from ..recordings import job_rules

# finalize (and mutagen, through edcrm.recordings.audio: 1.5 MB) is imported when a recording is
# finalized, not where the actors are only declared to be sent (the web process) or where this queue is
# not worked.

#: Assembling and storing a recording of 1 GiB or more over a slow link takes a while.
RECORDING_TIME_LIMIT_MS = 2 * 60 * 60 * 1000

register(RECORDING_UPLOAD, Rules(cancelled=job_rules.job_cancelled, retry_refusal=job_rules.retry_refusal))


@actor(queue_name="recordings", time_limit=60 * 1000)
def recording_upload_exhausted(message: dict, retry_info: dict) -> None:
    """The last attempt to finalize an upload failed: the upload is failed. Only errors that may pass
    are retried (an unusable file ends at once), so the reason is the server's."""
    from ..recordings import finalize  # 1-2 MB, 29 modules (measured) a web process goes without

    finalize.end(message["args"][0], UploadStatus.FAILED, UploadReason.SERVER.value)


def _reason_for(error: Unrecoverable):
    from ..recordings.finalize import UploadUnusable  # as above: finalize only where it runs

    return UploadReason.UNUSABLE if isinstance(error, UploadUnusable) else UploadReason.GONE


@contextlib.contextmanager
def _plain_reason(upload_id: str):
    """An upload that finalize ended (failed or cancelled) says why in plain words; the error goes on
    to the ledger as it is."""
    try:
        yield
    except Unrecoverable as error:
        _tell(upload_id, _reason_for(error))
        raise


def _tell(upload_id: str, reason: UploadReason) -> None:
    db.session.rollback()
    db.session.execute(
        sa.update(RecordingUpload)
        .where(
            RecordingUpload.id == upload_id,
            RecordingUpload.status.in_([UploadStatus.FAILED, UploadStatus.CANCELLED]),
        )
        .values(error=reason.value)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()


@actor(
    queue_name="recordings",
    time_limit=RECORDING_TIME_LIMIT_MS,
    on_retry_exhausted=recording_upload_exhausted.actor_name,
    actor_name=job_rules.PROCESS_CHUNKED_RECORDING,
    serves=RECORDING_UPLOAD,
)
def process_chunked_recording(upload_id: str) -> None:
    """Assemble a chunked upload's chunks into its call's Recording."""
    from ..recordings import finalize  # 1-2 MB, 29 modules (measured) a web process goes without

    with _plain_reason(upload_id):
        finalize.finalize_upload(upload_id)


@actor(
    queue_name="recordings",
    time_limit=RECORDING_TIME_LIMIT_MS,
    on_retry_exhausted=recording_upload_exhausted.actor_name,
    actor_name=job_rules.PROCESS_RECORDING_UPLOAD,
    serves=RECORDING_UPLOAD,
)
def process_recording_upload(upload_id: str) -> None:
    """Store a one-shot upload's file as its call's Recording."""
    from ..recordings import finalize  # 1-2 MB, 29 modules (measured) a web process goes without

    with _plain_reason(upload_id):
        finalize.finalize_upload(upload_id)
