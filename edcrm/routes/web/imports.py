"""The import pages (admins of the branch): the upload form, the history, one import's live progress
and its error report, all on the session cookie."""

from __future__ import annotations

import sqlalchemy as sa
from flask import current_app, flash, g, redirect, render_template, request, url_for
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge

from ...auth import page_auth
from ...extensions import csrf, db
from ...forms import ImportForm
from ...imports.upload import FileTooLarge, ImportRejected, active_telecallers, describe_size, start_import
from ...models import ImportStatus, LeadImport, Role, User
from ...permissions import import_for, visible_imports
from ..api.imports import error_report_response
from ..api.serializers import import_record
from ..bodies import IncompleteBody
from ..errors import status_of
from ..import_uploads import limit_request_size
from . import bp

HISTORY_LIMIT = 200


def _form_page(form: ImportForm, status: int = 200):
    telecallers = active_telecallers(g.user.branch_id)
    form.telecaller_ids.choices = [(user.id, user.email) for user in telecallers]
    limit = describe_size(current_app.config["MAX_CSV_BYTES"])
    return render_template("imports/new.html", form=form, telecallers=telecallers, limit=limit), status


def _refused(error: ImportRejected, form: ImportForm):
    """The form again, with why the file was refused, under the refusal's status."""
    flash(error.message, "error")
    return _form_page(form, status_of(error))


# The form's own CSRF check (FlaskForm.validate_on_submit) protects this view; the global check is
# skipped because it would parse the body before the size limit below is set.
@bp.route("/imports/new", methods=["GET", "POST"])
@csrf.exempt
@page_auth(Role.ADMIN)
def new_import():
    if request.method == "POST":
        limit_request_size()
        try:
            request.files, request.form  # noqa: B018  (parse now, under the limit)
        except RequestEntityTooLarge:
            return _refused(FileTooLarge(current_app.config["MAX_CSV_BYTES"]), ImportForm(formdata=None))
        except ClientDisconnected:  # werkzeug's own, where the server does not terminate the body
            raise IncompleteBody() from None

    form = ImportForm()
    if not form.validate_on_submit():
        status = 200
        if form.is_submitted():  # a form without its CSRF token is refused as CSRFProtect would
            status = 400 if "csrf_token" in form.errors else 422
        for errors in form.errors.values():
            for message in errors:
                flash(message, "error")
        return _form_page(form, status)

    upload = form.file.data
    try:
        # The field is required, so a validated form has ids; `or []` only narrows the type.
        lead_import = start_import(g.user, upload.stream, upload.filename, form.telecaller_ids.data or [])
    except ImportRejected as error:
        return _refused(error, form)
    finally:
        upload.close()
    flash(f"Import #{lead_import.id} of {lead_import.filename} is queued.", "success")
    return redirect(url_for("web.show_import", import_id=lead_import.id))


@bp.get("/imports")
@page_auth(Role.ADMIN)
def list_imports():
    stmt = (
        sa.select(LeadImport)
        .where(visible_imports(g.user))
        .order_by(LeadImport.id.desc())
        .limit(HISTORY_LIMIT)
    )
    imports = list(db.session.execute(stmt).scalars())
    return render_template("imports/list.html", imports=imports)


def progress(lead_import: LeadImport) -> dict:
    """What the page shows, as JSON for its polling script: the import, its percentage, whether it is
    over, and the distribution by telecaller email (every chosen telecaller, 0 for none yet)."""
    data = import_record(lead_import)
    final = lead_import.is_final
    if lead_import.total_rows:
        percent = min(100, round(100 * lead_import.processed_rows / lead_import.total_rows))
    else:
        percent = 100 if lead_import.status == ImportStatus.COMPLETED else 0
    chosen = list(dict.fromkeys([*lead_import.telecaller_ids, *map(int, lead_import.distribution or {})]))
    emails = dict(db.session.execute(sa.select(User.id, User.email).where(User.id.in_(chosen))).all())
    counts = {int(key): value for key, value in (lead_import.distribution or {}).items()}
    data["distribution_rows"] = [
        {"telecaller_id": i, "email": emails.get(i, f"user {i}"), "leads": counts.get(i, 0)} for i in chosen
    ]
    data["percent"] = percent
    data["final"] = final
    data["rejected_rows"] = lead_import.failed_rows + lead_import.duplicate_rows
    data["errors_url"] = url_for("web.import_errors", import_id=lead_import.id)
    return data


@bp.get("/imports/<int:import_id>")
@page_auth(Role.ADMIN)
def show_import(import_id: int):
    lead_import = import_for(g.user, import_id)
    return render_template("imports/show.html", lead_import=lead_import, progress=progress(lead_import))


@bp.get("/imports/<int:import_id>/progress")
@page_auth(Role.ADMIN)
def import_progress(import_id: int):
    """The page's polling endpoint (session cookie; the /api/ twin wants a bearer token)."""
    response = progress(import_for(g.user, import_id))
    return response, 200, {"Cache-Control": "no-store"}


@bp.get("/imports/<int:import_id>/errors.csv")
@page_auth(Role.ADMIN)
def import_errors(import_id: int):
    return error_report_response(import_for(g.user, import_id))
