"""Lead imports (admins of the branch): POST /api/imports uploads a CSV, GET lists and shows imports,
GET /api/imports/ID/errors.csv downloads the rejected rows."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Response, current_app, g, request, stream_with_context, url_for
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge

from ...auth import api_auth
from ...extensions import db
from ...imports.upload import FileTooLarge, start_import
from ...models import ImportStatus, LeadImport, Role
from ...permissions import import_for, visible_imports
from ..bodies import IncompleteBody
from ..errors import ApiError
from ..import_uploads import limit_request_size, parse_telecaller_ids
from . import bp
from .inputs import Fields

DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT = 100, 500


def import_json(lead_import: LeadImport) -> dict:
    """The contract's import object."""
    errors_url = url_for("api.get_import_errors", import_id=lead_import.id)
    return {**lead_import.to_dict(), "errors_url": errors_url}


def _too_large() -> ApiError | FileTooLarge:
    """The 413 of a body werkzeug refused: the file, or (rarely) a form of too many or too big fields."""
    length, limit = request.content_length, request.max_content_length
    if length is not None and limit is not None and length <= limit:
        return ApiError(413, "form_too_large", "The form has too many fields, or a field that is too long.")
    return FileTooLarge(current_app.config["MAX_CSV_BYTES"])


@bp.post("/imports")
@api_auth(Role.ADMIN)
def create_import():
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

    fields = Fields({})
    if upload is None or not upload.filename:
        fields.error("file", "is required: the CSV, as a file part named `file`")
    try:
        telecaller_ids = parse_telecaller_ids(raw_ids)
    except ValueError as error:
        fields.error("telecaller_ids", str(error))
    else:
        if not telecaller_ids:
            fields.error("telecaller_ids", "is required: one or more telecaller ids")
    fields.check()

    try:
        lead_import = start_import(g.user, upload.stream, upload.filename, telecaller_ids)
    except RequestEntityTooLarge:  # the body went over the limit while the file was being read
        raise _too_large() from None
    finally:
        upload.close()  # the spooled temporary file
    # `queued`, as the import was committed: a fast worker may already have moved it on.
    body = {"id": lead_import.id, "status": ImportStatus.QUEUED.value, "job_id": lead_import.job_id}
    return body, 202, {"Location": url_for(".get_import", import_id=lead_import.id)}


@bp.get("/imports")
@api_auth(Role.ADMIN)
def list_imports():
    fields = Fields(request.args, text=True)
    limit = fields.integer(
        "limit", minimum=1, maximum=MAX_LIST_LIMIT, required=False, default=DEFAULT_LIST_LIMIT
    )
    fields.check()
    stmt = sa.select(LeadImport).where(visible_imports(g.user)).order_by(LeadImport.id.desc()).limit(limit)
    return {"items": [import_json(lead_import) for lead_import in db.session.execute(stmt).scalars()]}


@bp.get("/imports/<int:import_id>")
@api_auth(Role.ADMIN)
def get_import(import_id: int):
    return import_json(import_for(g.user, import_id))


def error_report_response(lead_import: LeadImport) -> Response:
    """The import's rejected rows as a streamed CSV download (shared with the page route)."""
    from ...imports.report import iter_error_report

    rows = stream_with_context(iter_error_report(lead_import))
    response = Response(rows, mimetype="text/csv")
    filename = f"import-{lead_import.id}-errors.csv"
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    response.headers["Cache-Control"] = "no-store"  # it changes while the import runs
    return response


@bp.get("/imports/<int:import_id>/errors.csv")
@api_auth(Role.ADMIN)
def get_import_errors(import_id: int):
    return error_report_response(import_for(g.user, import_id))
