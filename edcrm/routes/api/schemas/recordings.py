"""The bodies of recording uploads: the one-shot and chunked uploads, their progress and their job."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema
from werkzeug.datastructures import FileStorage

from ....models import UploadStatus
from ....models.recording import MAX_CHUNKS
from ..inputs import Integer, RequestModel, Text, invalid
from .base import SHA256, UPLOAD_ID, Answer, Binary, NonNegative

_TOTAL_SIZE = "The whole file's size in bytes; over MAX_RECORDING_BYTES is a 413."
_SHA256 = "Of the whole file; checked when it is assembled."


class UploadRequest(RequestModel):
    call_log_id: Annotated[int, Integer()]
    filename: Annotated[str, Text(1000)]
    expected_chunks: Annotated[int, Integer(1, MAX_CHUNKS)]
    total_size: Annotated[int, Integer()] | None = Field(None, description=_TOTAL_SIZE)
    # Its form is checked by edcrm.recordings.uploads (invalid_upload).
    sha256: Annotated[str, Text(64, required=False, form=SHA256)] | None = Field(None, description=_SHA256)


def _file_part(value: Any) -> FileStorage:
    if not isinstance(value, FileStorage):
        raise invalid("is required")
    return value


class RecordingUpload(BaseModel):
    """The multipart form of POST /api/call-logs/ID/recording."""

    # Read by the route itself, once it has bounded the body (see routes.api.recordings).

    model_config = ConfigDict(arbitrary_types_allowed=True)

    file: Annotated[FileStorage, BeforeValidator(_file_part), WithJsonSchema({**Binary, "minLength": 1})]


class UploadCreated(Answer):
    upload_id: str = Field(pattern=UPLOAD_ID)
    max_chunk_bytes: int


class UploadProgress(Answer):
    upload_id: str = Field(pattern=UPLOAD_ID)
    received: list[NonNegative]
    missing: list[NonNegative]


class Upload(UploadProgress):
    status: UploadStatus
    call_log_id: int
    recording_id: int | None
    job_id: str | None
    error: str | None = Field(None, description="Why it failed or was cancelled.")
    created_at: datetime | None = None
    updated_at: datetime | None = None
    # tus uploads only (absent for the others).
    offset: NonNegative | None = Field(None, description="tus: the bytes received and committed.")
    length: NonNegative | None = Field(
        None, description="tus: the recording's length (Upload-Length), null while it is deferred."
    )


class JobAccepted(Answer):
    job_id: str = Field(description="The Dramatiq message id of the job.")


class SingleUploadAccepted(JobAccepted):
    """A one-shot upload, stored: its job, and the upload it can be followed by."""

    upload_id: str = Field(pattern=UPLOAD_ID, description="GET /api/recordings/uploads/UPLOAD_ID follows it.")
