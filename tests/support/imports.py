"""CSV files of leads, uploading them through the API and the import form, and queueing an import as the
upload does."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import dramatiq
from werkzeug.test import EnvironBuilder

from edcrm import jobs
from edcrm.extensions import db
from edcrm.imports.job_rules import IMPORT_LEADS
from edcrm.models import ImportStatus, LeadImport
from edcrm.storage import get_storage
from tests.support.people import bearer

HEADER = "name,phone,email,city\n"
VALID_ROWS = [
    "Asha Nair,9847012301,asha@example.com,Kochi",
    "Rahul Menon,+91 98470 12302,,Thrissur",
    "Fathima K,098470-12303,fathima@example.com,Kochi",
    "Arjun Das,9847012304,,Aluva",
    "Meera Pillai,9847012305,meera@example.com,Kochi",
    "Joseph T,9847012306,,Ernakulam",
]
INVALID_ROW = "Nobody,12345,not-an-email,Kochi"  # row 8 of the file
DUPLICATE_ROW = "Rahul Again,9847012302,,Kochi"  # row 9: row 3's phone


def csv_bytes(rows=VALID_ROWS, header=HEADER) -> bytes:
    return (header + "".join(row + "\n" for row in rows)).encode()


SAMPLE_CSV = csv_bytes([*VALID_ROWS, INVALID_ROW, DUPLICATE_ROW])


def stored_files(app) -> list[Path]:
    """The files of app's local storage."""
    root = Path(app.config["STORAGE_URL"].removeprefix("file://"))
    return [path for path in root.rglob("*") if path.is_file()] if root.exists() else []


def post_import(client, user, data: bytes = SAMPLE_CSV, telecaller_ids=(), filename="leads.csv", **form):
    """POST /api/imports as user."""
    body = {"telecaller_ids": [str(i) for i in telecaller_ids], **form}
    if data is not None:
        body["file"] = (io.BytesIO(data), filename)
    return client.post("/api/imports", data=body, headers=bearer(user), content_type="multipart/form-data")


def upload(client, data=SAMPLE_CSV, telecaller_ids=(), filename="leads.csv", **extra):
    """POST the import form (/imports/new) as the client's signed-in user."""
    form = {"telecaller_ids": [str(i) for i in telecaller_ids], **extra}
    if data is not None:
        form["file"] = (io.BytesIO(data), filename)
    return client.post("/imports/new", data=form, content_type="multipart/form-data")


def imports_in(app) -> list[LeadImport]:
    with app.app_context():
        return db.session.query(LeadImport).order_by(LeadImport.id).all()


def queued_messages(stub_broker) -> list[dramatiq.Message]:
    return [dramatiq.Message.decode(data) for data in stub_broker.queues["csv_import"].queue]


def form_body(fields: dict) -> tuple[bytes, str]:
    """A form's body and Content-Type, as a client sends them."""
    environ = EnvironBuilder(method="POST", data=fields).get_environ()
    return environ["wsgi.input"].read(), environ["CONTENT_TYPE"]


def queue_import(branch, data: bytes, telecallers, filename="leads.csv") -> int:
    """Store data and queue its import, as the upload does (the file, the import, then the job sent
    after the commit): the import's id."""
    key = f"imports/{uuid.uuid4().hex}/{filename}"
    get_storage().save(key, io.BytesIO(data))
    lead_import = LeadImport(
        branch_id=branch.id,
        filename=filename,
        storage_key=key,
        telecaller_ids=[t.id for t in telecallers],
        status=ImportStatus.QUEUED,
        job_id=jobs.new_job_id(),
    )
    db.session.add(lead_import)
    db.session.flush()
    jobs.send(IMPORT_LEADS, lead_import.id, branch_id=branch.id, job_id=lead_import.job_id)
    return lead_import.id
