"""The JSON bodies of the API, declared once: requests are validated against these models and answers
are checked against them, and the OpenAPI document (edcrm.routes.api.document) is generated from them.

Request models are built from the strict field types of edcrm.routes.api.inputs; the query-string
models and cursors are beside them. A model's class name is its name in the document.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, RootModel, WithJsonSchema
from werkzeug.datastructures import FileStorage

from ...models import CallOutcome, ImportStatus, JobState, LeadStatus, Role, UploadStatus
from ...models.recording import MAX_CHUNKS
from ..import_uploads import parse_telecaller_ids
from .inputs import (
    Choice,
    Integer,
    QueryModel,
    QueryText,
    RequestModel,
    Text,
    invalid,
)
from .pagination import DEFAULT_LIMIT, MAX_LIMIT, JobCursor, LeadCursor

#: A day: a longer call is a client's bug, and the column is a 32-bit integer on PostgreSQL.
MAX_CALL_SECONDS = 24 * 60 * 60
DEFAULT_IMPORT_LIST_LIMIT, MAX_IMPORT_LIST_LIMIT = 100, 500

UPLOAD_ID = "^[0-9a-f]{32}$"
SHA256 = "^[0-9a-fA-F]{64}$"
NonNegative = Annotated[int, Field(ge=0)]
Binary: dict[str, Any] = {"type": "string", "format": "binary"}

#: A value of telecaller_ids: ids of 1..2^31-1 in ASCII digits without a leading zero, separated by
#: commas, blanks around them (what edcrm.routes.import_uploads.parse_telecaller_ids takes).
_ID = (
    "(?:[1-9][0-9]{0,8}|1[0-9]{9}|20[0-9]{8}|21[0-3][0-9]{7}|214[0-6][0-9]{6}|2147[0-3][0-9]{5}"
    "|21474[0-7][0-9]{4}|214748[0-2][0-9]{3}|2147483[0-5][0-9]{2}|21474836[0-3][0-9]|214748364[0-7])"
)
TELECALLER_IDS_PATTERN = f"^[ \\t\\r\\n]*{_ID}[ \\t\\r\\n]*(?:,[ \\t\\r\\n]*{_ID}[ \\t\\r\\n]*)*$"


def _no_defaults(schema: dict[str, Any]) -> None:
    """An answer's optional keys are absent or present, never filled in: no defaults to document."""
    for prop in schema.get("properties", {}).values():
        prop.pop("default", None)


class Answer(BaseModel):
    """An answer's body: checked, never altered, so extra keys are kept."""

    model_config = ConfigDict(extra="allow", json_schema_extra=_no_defaults)


# -- errors --------------------------------------------------------------------------------------------


class ErrorDetail(Answer):
    code: str = Field(pattern="^[a-z][a-z0-9_]*$", examples=["validation_failed"])
    message: str
    fields: dict[str, str] | None = Field(
        None, description="validation_failed: what is wrong with each field."
    )


class Error(Answer):
    """Every 4xx and 503 of the API."""

    error: ErrorDetail


# -- auth ----------------------------------------------------------------------------------------------


class TokenRequest(RequestModel):
    email: Annotated[str, Text(254)]
    password: Annotated[str, Text(1024)]
    name: Annotated[str, Text(80, required=False)] | None = Field(
        "api", description="A label, e.g. the device."
    )


class User(Answer):
    id: int
    email: str
    role: Role
    branch_id: int


class TokenResponse(Answer):
    token: str
    user: User


# -- leads and call logs -------------------------------------------------------------------------------


class LeadQuery(QueryModel):
    limit: Annotated[int, Integer(1, MAX_LIMIT, query=True)] = DEFAULT_LIMIT
    cursor: LeadCursor | None = Field(None, description="The `next` of the previous page.")


class Lead(Answer):
    id: int
    student_name: str
    phone_number: str = Field(description="E.164", examples=["+919876543210"])
    email: str | None
    city: str | None
    status: LeadStatus
    telecaller_id: int | None
    import_id: int | None


class LeadPage(Answer):
    items: list[Lead]
    next: LeadCursor | None = Field(description="The cursor of the next page; null on the last.")


class CallLogRequest(RequestModel):
    lead_id: Annotated[int, Integer()]
    outcome: Annotated[CallOutcome, Choice()]
    duration_seconds: Annotated[int, Integer(0, MAX_CALL_SECONDS)] = Field(
        description="A whole number of seconds, at most a day."
    )


class Recording(Answer):
    id: int
    size: int
    content_type: str
    sha256: str = Field(pattern="^[0-9a-f]{64}$")
    duration_seconds: float | None
    download_url: str


class CallLog(Answer):
    id: int
    lead_id: int
    telecaller_id: int
    outcome: CallOutcome
    duration_seconds: NonNegative
    created_at: datetime | None = None
    recording: Recording | None


# -- imports -------------------------------------------------------------------------------------------


class ImportQuery(QueryModel):
    limit: Annotated[int, Integer(1, MAX_IMPORT_LIST_LIMIT, query=True)] = DEFAULT_IMPORT_LIST_LIMIT


def _csv_part(value: Any) -> FileStorage:
    if not isinstance(value, FileStorage) or not value.filename:
        raise invalid("is required: the CSV, as a file part named `file`")
    return value


def _telecaller_ids(values: Any) -> list[int]:
    try:
        ids = parse_telecaller_ids(values)
    except ValueError as error:
        raise invalid(str(error)) from None
    if not ids:
        raise invalid("is required: one or more telecaller ids")
    return ids


class ImportUpload(BaseModel):
    """The multipart form of POST /api/imports."""

    # Read by the route itself, once it has bounded the body (see routes.api.imports.create_import).

    model_config = ConfigDict(arbitrary_types_allowed=True)

    file: Annotated[
        FileStorage,
        BeforeValidator(_csv_part),
        WithJsonSchema(
            {
                **Binary,
                "contentMediaType": "text/csv",
                "minLength": 1,
                "description": "The CSV (at most `MAX_CSV_BYTES`), as a file part: a part with a filename.",
            }
        ),
    ]
    telecaller_ids: Annotated[
        list[int],
        BeforeValidator(_telecaller_ids),
        WithJsonSchema(
            {
                "type": "array",
                "minItems": 1,
                "maxItems": 999,
                "items": {"type": "string", "pattern": TELECALLER_IDS_PATTERN},
                "description": "Telecaller ids: repeat the field, or send ids separated by commas (spaces, "
                "tabs and line breaks around them are ignored). A form of more than 1,000 parts is a 413 "
                "(`form_too_large`).",
            }
        ),
    ]


class ImportQueued(Answer):
    id: int
    status: Literal["queued"]
    job_id: str = Field(description="The Dramatiq message id (see the job ledger).")


class Import(Answer):
    id: int
    filename: str
    status: ImportStatus
    total_rows: NonNegative
    processed_rows: NonNegative
    successful_rows: NonNegative
    failed_rows: NonNegative
    duplicate_rows: NonNegative
    distribution: dict[str, NonNegative] = Field(
        description='Leads per telecaller: {"TELECALLER_ID": count}.',
        json_schema_extra={"propertyNames": {"pattern": "^[0-9]+$"}},
    )
    error: str | None
    errors_url: str = Field(description="The error report (`GET /api/imports/ID/errors.csv`).")
    created_at: datetime
    finished_at: datetime | None


class ImportList(Answer):
    items: list[Import]


# -- recordings ----------------------------------------------------------------------------------------


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


class JobAccepted(Answer):
    job_id: str = Field(description="The Dramatiq message id of the job.")


# -- jobs ----------------------------------------------------------------------------------------------


class JobQuery(QueryModel):
    state: Annotated[JobState, Choice()] | None = None
    queue: Annotated[str | None, QueryText(120)] = Field(
        None, description="Only this queue's jobs (empty: any queue)."
    )
    actor: Annotated[str | None, QueryText(120)] = Field(
        None, description="Only this actor's jobs (empty: any actor)."
    )
    limit: Annotated[int, Integer(1, MAX_LIMIT, query=True)] = DEFAULT_LIMIT
    cursor: JobCursor | None = Field(None, description="The `next` of the previous page.")


class RetryFilter(RequestModel):
    """Which failed jobs to retry; an empty body or `{}`: all of them."""

    body_optional: ClassVar[bool] = True

    queue: Annotated[str, Text(120, required=False)] | None = Field(
        None, description="Only this queue's jobs."
    )
    actor: Annotated[str, Text(120, required=False)] | None = Field(
        None, description="Only this actor's jobs."
    )


class JobError(Answer):
    attempt: int
    at: datetime
    error: str = Field(description="`ErrorType: message`.")
    traceback: str | None = None


class JobSubject(Answer):
    kind: Literal["import", "recording_upload"]
    id: int | str
    url: str


# pydantic's mypy plugin gives extra="allow" models an __init__(**kwargs), which clashes with the field.
class Job(Answer):  # type: ignore[no-redef]
    id: str = Field(description="The Dramatiq message id.")
    actor: str
    queue: str
    args: list[Any]
    kwargs: dict[str, Any] = Field(default_factory=dict)
    state: JobState
    attempts: NonNegative
    max_retries: NonNegative
    branch_id: int | None = Field(None, description="The branch served; null for a system job.")
    errors: list[JobError]
    enqueued_at: datetime
    scheduled_at: datetime | None = None
    started_at: datetime | None
    finished_at: datetime | None
    url: str | None = None
    subject: JobSubject | None = Field(None, description="The import or recording upload the job works on.")


class JobList(Answer):
    items: list[Job]
    counts: dict[str, NonNegative] = Field(
        description="Jobs per state (every state), under the queue and actor filters."
    )
    queues: dict[str, NonNegative] = Field(
        default_factory=dict, description="Jobs per queue, under the state and actor filters."
    )
    next: JobCursor | None = Field(description="The cursor of the next (older) page; null on the last.")


class RetryReport(Answer):
    retried: int
    job_ids: list[str]
    remaining: int = Field(description="Failed jobs left for another call.")


# -- meta ----------------------------------------------------------------------------------------------

_Check = Annotated[
    str, Field(description="`ok`, or `down: ErrorType`.", examples=["ok", "down: OperationalError"])
]


class Health(Answer):
    database: _Check
    broker: _Check
    storage: _Check


class OpenApiDocument(RootModel[dict[str, Any]]):
    """The OpenAPI 3.1 document of this API."""
