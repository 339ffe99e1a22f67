"""The bodies of CSV imports of leads: the multipart upload, the import's record and its list."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema
from werkzeug.datastructures import FileStorage

from ....models import ImportStatus
from ...import_uploads import parse_telecaller_ids
from ..inputs import Integer, QueryModel, invalid
from .base import Answer, Binary, NonNegative

DEFAULT_IMPORT_LIST_LIMIT, MAX_IMPORT_LIST_LIMIT = 100, 500

#: A value of telecaller_ids: ids of 1..2^31-1 in ASCII digits without a leading zero, separated by
#: commas, blanks around them (what edcrm.routes.import_uploads.parse_telecaller_ids takes).
_ID = (
    "(?:[1-9][0-9]{0,8}|1[0-9]{9}|20[0-9]{8}|21[0-3][0-9]{7}|214[0-6][0-9]{6}|2147[0-3][0-9]{5}"
    "|21474[0-7][0-9]{4}|214748[0-2][0-9]{3}|2147483[0-5][0-9]{2}|21474836[0-3][0-9]|214748364[0-7])"
)
TELECALLER_IDS_PATTERN = f"^[ \\t\\r\\n]*{_ID}[ \\t\\r\\n]*(?:,[ \\t\\r\\n]*{_ID}[ \\t\\r\\n]*)*$"


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
