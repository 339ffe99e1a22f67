"""What operators' actions on a recordings job mean for its upload (edcrm.jobs.subjects).

A cancelled job ends its upload `cancelled` at once, its chunks kept: no attempt will finish it, and a
retry of the job can still make the recording (finalize moves the upload back to `processing`). A
retry is refused where it could only end cancelled: the upload, its call log or its chunks are gone.
"""

from __future__ import annotations

import sqlalchemy as sa

from ..extensions import db
from ..jobs.subjects import Subject
from ..models import CallLog, RecordingUpload, UploadKind, UploadStatus
from ..models.recording import UploadReason
from ..models.types import utcnow

#: The actors that finalize a chunked and a one-shot upload (edcrm.actors.recordings), by the names this
#: package sends them by.
PROCESS_CHUNKED_RECORDING = "process_chunked_recording"
PROCESS_RECORDING_UPLOAD = "process_recording_upload"

#: The upload's error once an operator cancelled its job (telecallers read it: plain words).
CANCELLED_BY_OPERATOR = UploadReason.CANCELLED_BY_OPERATOR.value


def job_cancelled(subject: Subject) -> None:
    """An upload whose job was cancelled is over: `cancelled`, unless it already ended otherwise."""
    db.session.execute(
        sa.update(RecordingUpload)
        .where(RecordingUpload.id == str(subject.id), RecordingUpload.status == UploadStatus.PROCESSING)
        .values(status=UploadStatus.CANCELLED, error=CANCELLED_BY_OPERATOR, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )


def retry_refusal(subject: Subject) -> str | None:
    """Why a retry of the upload's job could only end cancelled, or None when it may work."""
    upload = db.session.get(RecordingUpload, str(subject.id))
    if upload is None:
        return "The recording upload no longer exists (deleted or pruned), so there is nothing to retry."
    if upload.status is UploadStatus.COMPLETED:
        return None  # a retry only finds the recording made and finishes the cleanup
    if upload.call_log_id is None or db.session.get(CallLog, upload.call_log_id) is None:
        return "The call log of this recording was deleted, so the recording cannot be stored."
    if upload.status is UploadStatus.RECEIVING:
        return "The phone has not finished sending this recording; completing it starts a new job."
    if upload.kind is UploadKind.CHUNKED and upload.missing_indexes():
        return (
            "Chunks of this recording were deleted, so it cannot be assembled; the phone must send it again."
        )
    return None
