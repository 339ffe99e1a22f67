"""Lead imports (admins of the branch): POST /api/imports uploads a CSV, GET lists and shows imports,
GET /api/imports/ID/errors.csv downloads the rejected rows."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import Response, current_app, g, request, stream_with_context, url_for
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge

from ...auth import api_auth
from ...extensions import db
from ...imports.report import iter_error_report
from ...imports.upload import FileTooLarge, start_import
from ...models import ImportStatus, LeadImport, Role
from ...permissions import import_for, visible_imports
from ..bodies import IncompleteBody
from ..errors import ApiError
from ..import_uploads import limit_request_size
from . import bp
from .inputs import parse
from .schemas.base import Error
from .schemas.imports import Import, ImportList, ImportQuery, ImportQueued, ImportUpload
from .serializers import import_json
from .spec import FORBIDDEN, NOT_FOUND, UNAUTHORIZED, VALIDATION_FAILED, operation, unavailable

_ADMIN_ANSWERS: dict[str, Any] = {"HTTP_401": UNAUTHORIZED, "HTTP_403": FORBIDDEN}
_ONE_IMPORT: dict[str, Any] = {**_ADMIN_ANSWERS, "HTTP_404": NOT_FOUND}


def _too_large() -> ApiError | FileTooLarge:
    """The 413 of a body werkzeug refused: the file, or (rarely) a form of too many or too big fields."""
    length, limit = request.content_length, request.max_content_length
    if length is not None and limit is not None and length <= limit:
        return ApiError(413, "form_too_large", "The form has too many fields, or a field that is too long.")
    return FileTooLarge(current_app.config["MAX_CSV_BYTES"])


@bp.post("/imports")
@api_auth(Role.ADMIN)
@operation(
    "createImport",
    "imports",
    form=ImportUpload,
    HTTP_202=(ImportQueued, "Stored and queued."),
    HTTP_413=(
        Error,
        "The file is over `MAX_CSV_BYTES` (`file_too_large`), or the form has too many fields "
        "(`form_too_large`); nothing is kept.",
    ),
    HTTP_415=(
        Error,
        "Not multipart/form-data (`unsupported_media_type`), or the file is not CSV text (`not_csv`); "
        "nothing is kept.",
    ),
    HTTP_422=(
        Error,
        "A missing file part or telecaller ids that are not ids (`validation_failed`, with `fields`), an "
        "empty file (`empty_file`), telecallers that are not active telecallers of the branch "
        "(`invalid_telecallers`, with `telecaller_ids`: the offending ids), or none chosen at all "
        "(`no_telecallers`); nothing is kept.",
    ),
    **_ADMIN_ANSWERS,
    HTTP_503=unavailable("storage", "queue", busy=True),
)
def create_import():
    """Upload a CSV of leads and queue its import (admins)

    The file is streamed to storage; the import runs on the `csv_import` queue. Telecallers must be
    active telecallers of the admin's branch."""
    if request.mimetype != "multipart/form-data":
        message = "Send the CSV as multipart/form-data, in a part named `file`."
        raise ApiError(415, "unsupported_media_type", message)
    limit_request_size()
    try:
        upload = request.files.get("file")
        raw_ids = request.form.getlist("telecaller_ids")
    except RequestEntityTooLarge:
        raise _too_large() from None
    except ClientDisconnected:  # werkzeug's own, where the server does not terminate the body
        raise IncompleteBody() from None

    form = parse(ImportUpload, {"file": upload, "telecaller_ids": raw_ids})
    try:
        lead_import = start_import(g.user, form.file.stream, form.file.filename, form.telecaller_ids)
    except RequestEntityTooLarge:  # the body went over the limit while the file was being read
        raise _too_large() from None
    finally:
        form.file.close()  # the spooled temporary file
    # `queued`, as the import was committed: a fast worker may already have moved it on.
    body = {"id": lead_import.id, "status": ImportStatus.QUEUED.value, "job_id": lead_import.job_id}
    return body, 202, {"Location": url_for(".get_import", import_id=lead_import.id)}


@bp.get("/imports")
@api_auth(Role.ADMIN)
@operation(
    "listImports",
    "imports",
    HTTP_200=(ImportList, "The newest imports of the caller's branch."),
    HTTP_422=VALIDATION_FAILED,
    **_ADMIN_ANSWERS,
)
def list_imports(query: ImportQuery):
    """The branch's imports, newest first (admins)"""
    newest = sa.select(LeadImport).where(visible_imports(g.user)).order_by(LeadImport.id.desc())
    stmt = newest.limit(query.limit)
    return {"items": [import_json(lead_import) for lead_import in db.session.execute(stmt).scalars()]}


@bp.get("/imports/<int:import_id>")
@api_auth(Role.ADMIN)
@operation("getImport", "imports", HTTP_200=(Import, "The import."), **_ONE_IMPORT)
def get_import(import_id: int):
    """An import's state, counts and distribution (admins of its branch)"""
    return import_json(import_for(g.user, import_id))


def error_report_response(lead_import: LeadImport) -> Response:
    """The import's rejected rows as a streamed CSV download (shared with the page route)."""
    rows = stream_with_context(iter_error_report(lead_import))
    response = Response(rows, mimetype="text/csv")
    filename = f"import-{lead_import.id}-errors.csv"
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    response.headers["Cache-Control"] = "no-store"  # it changes while the import runs
    return response


@bp.get("/imports/<int:import_id>/errors.csv")
@api_auth(Role.ADMIN)
@operation("getImportErrors", "imports", HTTP_200=(None, "The error report."), **_ONE_IMPORT)
def get_import_errors(import_id: int):
    """The import's rejected rows as CSV (admins of its branch)

    `row_number,reasons,<the row's original columns…>`, one line per rejected row (invalid or
    duplicate); a cell that a spreadsheet would run as a formula is prefixed with `'`. Sent as an
    attachment."""
    return error_report_response(import_for(g.user, import_id))
