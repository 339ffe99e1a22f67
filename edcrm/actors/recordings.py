"""The recordings actors, on queue `recordings`: an upload (chunked or one-shot) becomes a Recording.

Both run edcrm.recordings.finalize, which is safe to run again. When a job's retries are exhausted
(S3 down for longer than the backoff), `recording_upload_exhausted` marks the upload failed; its
chunks stay, so an operator can retry the job once storage is back.
"""

from __future__ import annotations

from ..jobs import actor, last_error
from ..jobs.subjects import RECORDING_UPLOAD, Rules, register
from ..recordings import job_rules

# finalize (and mutagen, through edcrm.recordings.audio) is imported when a recording is finalized, not
# where the actors are only declared to be sent (the web process) or where this queue is not worked.

#: Assembling and storing a recording of 1 GiB or more over a slow link takes a while.
RECORDING_TIME_LIMIT_MS = 2 * 60 * 60 * 1000

register(RECORDING_UPLOAD, Rules(cancelled=job_rules.job_cancelled, retry_refusal=job_rules.retry_refusal))


@actor(queue_name="recordings", time_limit=60 * 1000)
def recording_upload_exhausted(message: dict, retry_info: dict) -> None:
    """The last attempt to finalize an upload failed: the upload is failed, with the last error."""
    from ..models import UploadStatus
    from ..recordings import finalize

    error = last_error(message) or "the job failed after its retries"
    finalize.end(message["args"][0], UploadStatus.FAILED, error)


@actor(
    queue_name="recordings",
    time_limit=RECORDING_TIME_LIMIT_MS,
    on_retry_exhausted=recording_upload_exhausted.actor_name,
    serves=RECORDING_UPLOAD,
)
def process_chunked_recording(upload_id: str) -> None:
    """Assemble a chunked upload's chunks into its call's Recording."""
    from ..recordings import finalize

    finalize.finalize_upload(upload_id)


@actor(
    queue_name="recordings",
    time_limit=RECORDING_TIME_LIMIT_MS,
    on_retry_exhausted=recording_upload_exhausted.actor_name,
    serves=RECORDING_UPLOAD,
)
def process_recording_upload(upload_id: str) -> None:
    """Store a one-shot upload's file as its call's Recording."""
    from ..recordings import finalize

    finalize.finalize_upload(upload_id)
