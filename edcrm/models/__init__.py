"""The models, one module per aggregate. Importing this package registers them all with the metadata."""

from .branch import Branch
from .call_log import CallLog, CallOutcome
from .idempotency import IdempotencyKey
from .job import Job, JobError, JobState
from .lead import Lead, LeadStatus
from .lead_import import ImportRejection, ImportStatus, LeadImport
from .recording import (
    ConcatRole,
    Recording,
    RecordingChunk,
    RecordingUpload,
    RecordingUploadPart,
    UploadKind,
    UploadStatus,
)
from .user import ApiToken, Role, User

__all__ = [
    "ApiToken",
    "Branch",
    "CallLog",
    "CallOutcome",
    "ConcatRole",
    "IdempotencyKey",
    "ImportRejection",
    "ImportStatus",
    "Job",
    "JobError",
    "JobState",
    "Lead",
    "LeadImport",
    "LeadStatus",
    "Recording",
    "RecordingChunk",
    "RecordingUpload",
    "RecordingUploadPart",
    "Role",
    "UploadKind",
    "UploadStatus",
    "User",
]
