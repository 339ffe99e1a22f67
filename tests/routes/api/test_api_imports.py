"""POST /api/imports, GET /api/imports[/ID[/errors.csv]]: admins upload CSVs of leads and follow them."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from jsonschema import Draft202012Validator

from edcrm.extensions import db
from edcrm.imports import upload as upload_module
from edcrm.models import ImportStatus, Job, Lead, LeadImport, Role
from edcrm.storage import BLOCK_SIZE, S3Storage
from tests.support.imports import (
    DUPLICATE_ROW,
    HEADER,
    INVALID_ROW,
    SAMPLE_CSV,
    VALID_ROWS,
    csv_bytes,
    form_body,
    post_import,
    queued_messages,
    stored_files,
)
from tests.support.jobs import run_jobs
from tests.support.people import bearer, make_user


def import_count() -> int:
    return db.session.execute(sa.select(sa.func.count(LeadImport.id))).scalar_one()


def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_json()["error"]


# -- uploading -----------------------------------------------------------------------------------------------


def test_an_upload_is_stored_and_queued_before_any_worker_runs(app, client, admin, callers, stub_broker):
    response = post_import(client, admin, telecaller_ids=[c.id for c in callers])

    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] == "queued" and isinstance(body["id"], int)
    assert response.headers["Location"] == f"/api/imports/{body['id']}"

    lead_import = db.session.get(LeadImport, body["id"])
    assert lead_import.status == ImportStatus.QUEUED
    assert lead_import.filename == "leads.csv"
    assert lead_import.created_by_id == admin.id
    assert lead_import.branch_id == admin.branch_id
    assert lead_import.telecaller_ids == [c.id for c in callers]
    assert lead_import.job_id == body["job_id"]

    # The CSV is in storage, byte for byte, and one message names the import.
    [stored] = stored_files(app)
    assert stored.read_bytes() == SAMPLE_CSV
    assert lead_import.storage_key.startswith("imports/") and lead_import.storage_key.endswith("leads.csv")
    [message] = queued_messages(stub_broker)
    assert (message.message_id, message.args) == (body["job_id"], (body["id"],))
    assert db.session.get(Job, body["job_id"]).args == [body["id"]]


def test_an_upload_becomes_leads_shared_round_robin(app, client, admin, callers, stub_broker, stub_worker):
    response = post_import(client, admin, telecaller_ids=[c.id for c in callers])
    import_id = response.get_json()["id"]
    run_jobs(stub_broker, stub_worker, "csv_import", fail_fast=True)

    body = client.get(f"/api/imports/{import_id}", headers=bearer(admin)).get_json()
    assert body["status"] == "completed"
    assert (body["total_rows"], body["processed_rows"]) == (8, 8)
    assert (body["successful_rows"], body["failed_rows"], body["duplicate_rows"]) == (6, 1, 1)
    assert body["distribution"] == {str(c.id): 2 for c in callers}
    assert body["errors_url"] == f"/api/imports/{import_id}/errors.csv"
    assert body["finished_at"] is not None

    leads = db.session.execute(sa.select(Lead).where(Lead.import_id == import_id)).scalars().all()
    assert sorted(lead.phone_number for lead in leads) == [f"+9198470123{n:02}" for n in range(1, 7)]
    per_caller = {c.id: sum(lead.telecaller_id == c.id for lead in leads) for c in callers}
    assert per_caller == {c.id: 2 for c in callers}
    assert db.session.get(Job, response.get_json()["job_id"]).state.value == "succeeded"


def test_telecaller_ids_may_be_repeated_or_comma_separated(client, admin, callers, stub_broker):
    ids = [c.id for c in callers]
    repeated = post_import(client, admin, telecaller_ids=ids)
    comma = post_import(client, admin, telecaller_ids=[f"{ids[0]}, {ids[1]},{ids[2]}"])
    mixed = post_import(client, admin, telecaller_ids=[f"{ids[2]},{ids[0]}", str(ids[2])])

    assert [r.status_code for r in (repeated, comma, mixed)] == [202, 202, 202]
    saved = [db.session.get(LeadImport, r.get_json()["id"]).telecaller_ids for r in (repeated, comma, mixed)]
    assert saved == [ids, ids, [ids[2], ids[0]]]


def test_the_upload_is_streamed_to_storage_in_blocks(app, admin, callers, stub_broker):
    """A file object that makes its bytes as it is read, and records the reads: nobody asks for all."""

    class Generated:
        def __init__(self, size: int):
            self.left, self.sizes = size, []
            self.body = csv_bytes()[len(HEADER) :] * 100

        def read(self, size: int = -1) -> bytes:
            self.sizes.append(size)
            assert size is not None and size > 0, "the whole file was asked for"
            size = min(size, self.left, len(self.body))
            self.left -= size
            return self.body[:size]

    size = 5 * BLOCK_SIZE + 123
    head = io.BytesIO(HEADER.encode())

    class Joined(Generated):
        def read(self, size=-1):
            return head.read(size) or super().read(size)

    source = Joined(size)
    lead_import = upload_module.start_import(admin, source, "big.csv", [callers[0].id])

    assert max(source.sizes) <= BLOCK_SIZE
    assert app.extensions["edcrm.storage"].size(lead_import.storage_key) == size + len(HEADER)


# -- who may upload, and to whom --------------------------------------------------------------------------


def test_without_a_token_it_is_401(client, callers):
    response = client.post("/api/imports", data={"telecaller_ids": str(callers[0].id)})

    assert error_of(response, 401)["code"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_telecaller_may_not_import(app, client, callers, stub_broker):
    response = post_import(client, callers[0], telecaller_ids=[callers[1].id])

    assert error_of(response, 403)["code"] == "forbidden"
    assert import_count() == 0 and stored_files(app) == []


def test_a_telecaller_of_another_branch_is_422_naming_them(app, client, admin, callers, other_branch):
    stranger = make_user(other_branch, Role.TELECALLER, email="caller@thrissur.test")

    response = post_import(client, admin, telecaller_ids=[callers[0].id, stranger.id])

    error = error_of(response, 422)
    assert error["code"] == "invalid_telecallers"
    assert error["telecaller_ids"] == [stranger.id]
    assert str(stranger.id) in error["message"]
    assert "thrissur" not in error["message"]  # nothing about the other branch leaks
    assert import_count() == 0 and stored_files(app) == []


def test_an_inactive_telecaller_or_an_admin_or_an_unknown_id_is_422(app, client, admin, callers, branch):
    idle = make_user(branch, Role.TELECALLER, email="idle@kochi.test", active=False)
    other_admin = make_user(branch, Role.ADMIN, email="boss@kochi.test")

    response = post_import(client, admin, telecaller_ids=[callers[0].id, idle.id, other_admin.id, 99999])

    error = error_of(response, 422)
    assert error["telecaller_ids"] == [other_admin.id, 99999, idle.id]
    assert "deactivated" in error["message"] and "idle@kochi.test" in error["message"]
    assert import_count() == 0 and stored_files(app) == []


def test_another_branchs_import_is_403_and_an_unknown_one_404(
    client, admin, callers, other_branch, stub_broker
):
    import_id = post_import(client, admin, telecaller_ids=[callers[0].id]).get_json()["id"]
    outsider = make_user(other_branch, Role.ADMIN, email="admin@thrissur.test")

    for path in (f"/api/imports/{import_id}", f"/api/imports/{import_id}/errors.csv"):
        assert error_of(client.get(path, headers=bearer(outsider)), 403)["code"] == "forbidden"
        assert error_of(client.get(path, headers=bearer(callers[0])), 403)["code"] == "forbidden"
    assert error_of(client.get("/api/imports/424242", headers=bearer(admin)), 404)["code"] == "not_found"
    assert client.get("/api/imports", headers=bearer(outsider)).get_json() == {"items": []}


# -- bad uploads ---------------------------------------------------------------------------------------------


def test_missing_file_and_telecallers_are_422_with_each_field(client, admin):
    response = post_import(client, admin, data=None, telecaller_ids=[])

    error = error_of(response, 422)
    assert error["code"] == "validation_failed"
    assert set(error["fields"]) == {"file", "telecaller_ids"}


def test_telecaller_ids_that_are_not_numbers_are_422_naming_them(client, admin, callers):
    response = post_import(client, admin, telecaller_ids=[f"{callers[0].id},abc", "-3"])

    error = error_of(response, 422)
    assert "'abc'" in error["fields"]["telecaller_ids"] and "'-3'" in error["fields"]["telecaller_ids"]


def test_a_json_body_is_415(client, admin):
    response = client.post("/api/imports", json={"telecaller_ids": [1]}, headers=bearer(admin))

    assert error_of(response, 415)["code"] == "unsupported_media_type"


@pytest.mark.parametrize(
    ("limit", "shown"),
    [(100, "100 bytes"), (100 * 1024, "100 KiB")],
    ids=["within-the-first-block", "while-streaming-to-storage"],
)
def test_a_file_over_max_csv_bytes_is_413_and_nothing_is_kept(
    app, client, admin, callers, stub_broker, limit, shown
):
    app.config["MAX_CSV_BYTES"] = limit
    data = csv_bytes(VALID_ROWS * (limit // 200 + 1))  # a little over the limit, within the body's slack
    assert limit < len(data) < limit + 64 * 1024

    response = post_import(client, admin, data=data, telecaller_ids=[callers[0].id])

    error = error_of(response, 413)
    assert error["code"] == "file_too_large" and shown in error["message"]
    assert import_count() == 0 and stored_files(app) == []
    assert stub_broker.queues["csv_import"].qsize() == 0


def test_a_file_of_exactly_max_csv_bytes_is_accepted(app, client, admin, callers, stub_broker):
    data = csv_bytes()
    app.config["MAX_CSV_BYTES"] = len(data)

    assert post_import(client, admin, data=data, telecaller_ids=[callers[0].id]).status_code == 202


def test_a_body_far_over_the_limit_is_refused_before_it_is_read(app, client, admin, callers):
    app.config["MAX_CSV_BYTES"] = 1024
    data = HEADER.encode() + b"Asha,9847012301,,Kochi\n" * 20_000  # ~460 KB: over the limit and its slack

    response = post_import(client, admin, data=data, telecaller_ids=[callers[0].id])

    error = error_of(response, 413)
    assert error["code"] == "file_too_large" and "1 KiB" in error["message"]
    assert import_count() == 0 and stored_files(app) == []


@pytest.mark.parametrize(
    "data",
    [
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01" + bytes(range(256)) * 4,
        b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00" + bytes(range(256)) * 4,  # an .xlsx
    ],
    ids=["png", "xlsx"],
)
def test_a_file_that_is_not_csv_text_is_415_and_nothing_is_kept(app, client, admin, callers, data):
    response = post_import(client, admin, data=data, telecaller_ids=[callers[0].id], filename="leads.csv")

    error = error_of(response, 415)
    assert error["code"] == "not_csv" and "not CSV" in error["message"]
    assert import_count() == 0 and stored_files(app) == []


def test_an_empty_file_is_422(app, client, admin, callers):
    response = post_import(client, admin, data=b"", telecaller_ids=[callers[0].id])

    assert error_of(response, 422)["code"] == "empty_file"
    assert import_count() == 0 and stored_files(app) == []


def test_when_the_database_fails_the_stored_file_is_deleted(app, admin, callers, monkeypatch):
    from edcrm.actors.imports import import_leads

    def broken(*args, **kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(import_leads, "message_with_options", broken)

    with pytest.raises(RuntimeError):
        upload_module.start_import(admin, io.BytesIO(SAMPLE_CSV), "leads.csv", [callers[0].id])
    assert import_count() == 0 and stored_files(app) == []


def test_when_the_broker_is_down_it_is_503_and_nothing_is_kept(
    app, client, admin, callers, stub_broker, monkeypatch
):
    """The contract's "the request changes nothing": no import row, no ledger job, no file."""

    def down(message, *, delay=None):
        stub_broker.emit_before("enqueue", message, delay)  # the ledger writes its row, as on Redis
        raise ConnectionError("redis is down")

    monkeypatch.setattr(stub_broker, "enqueue", down)

    response = post_import(client, admin, telecaller_ids=[callers[0].id])

    assert error_of(response, 503)["code"] == "queue_unavailable"
    assert response.headers["Retry-After"]
    assert db.session.execute(sa.select(LeadImport)).scalars().all() == []
    assert db.session.execute(sa.select(Job)).scalars().all() == []
    assert stored_files(app) == []


# -- reading imports -----------------------------------------------------------------------------------------


def test_the_list_is_this_branchs_newest_first(client, admin, callers, other_branch, stub_broker):
    outsider = make_user(other_branch, Role.ADMIN, email="admin@thrissur.test")
    theirs = make_user(other_branch, Role.TELECALLER, email="caller@thrissur.test")
    first = post_import(client, admin, telecaller_ids=[callers[0].id], filename="first.csv").get_json()
    post_import(client, outsider, telecaller_ids=[theirs.id], filename="elsewhere.csv")
    second = post_import(client, admin, telecaller_ids=[callers[1].id], filename="second.csv").get_json()

    items = client.get("/api/imports", headers=bearer(admin)).get_json()["items"]

    assert [(item["id"], item["filename"]) for item in items] == [
        (second["id"], "second.csv"),
        (first["id"], "first.csv"),
    ]
    assert items[0]["status"] == "queued" and items[0]["errors_url"].endswith("/errors.csv")
    assert (
        client.get("/api/imports?limit=1", headers=bearer(admin)).get_json()["items"][0]["id"] == second["id"]
    )
    assert error_of(client.get("/api/imports", headers=bearer(callers[0])), 403)["code"] == "forbidden"
    assert error_of(client.get("/api/imports?limit=0", headers=bearer(admin)), 422)["fields"]["limit"]


def test_the_answers_match_the_openapi_document(client, admin, callers, stub_broker, stub_worker):
    document = client.get("/api/openapi.json").get_json()

    def check(name, instance):
        schema = {"$ref": f"#/components/schemas/{name}", "components": document["components"]}
        Draft202012Validator(schema).validate(instance)

    created = post_import(client, admin, telecaller_ids=[c.id for c in callers])
    check("ImportQueued", created.get_json())
    check("Import", client.get(f"/api/imports/{created.get_json()['id']}", headers=bearer(admin)).get_json())
    run_jobs(stub_broker, stub_worker, "csv_import", fail_fast=True)
    check("Import", client.get(f"/api/imports/{created.get_json()['id']}", headers=bearer(admin)).get_json())
    check("ImportList", client.get("/api/imports", headers=bearer(admin)).get_json())
    check("Error", post_import(client, admin, data=None, telecaller_ids=[]).get_json())


def test_the_error_report_downloads_as_csv(client, admin, callers, stub_broker, stub_worker):
    import_id = post_import(client, admin, telecaller_ids=[c.id for c in callers]).get_json()["id"]
    run_jobs(stub_broker, stub_worker, "csv_import", fail_fast=True)

    response = client.get(f"/api/imports/{import_id}/errors.csv", headers=bearer(admin))

    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"] == f'attachment; filename="import-{import_id}-errors.csv"'
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True).lstrip("\ufeff"))))
    assert rows[0] == ["row_number", "reasons", "name", "phone", "email", "city"]
    assert [row[0] for row in rows[1:]] == ["8", "9"]
    assert rows[1][2:] == INVALID_ROW.split(",") and rows[2][2:] == DUPLICATE_ROW.split(",")
    assert "phone" in rows[1][1].lower() and "duplicate" in rows[2][1].lower()


# -- on S3 ---------------------------------------------------------------------------------------------------


@pytest.fixture
def s3_storage(app, s3_server):
    """The app's storage is a bucket of moto's S3 server, over HTTP."""
    bucket = s3_server.create_bucket()
    storage = S3Storage(bucket, "edcrm", endpoint_url=s3_server.endpoint_url, region="us-east-1")
    app.extensions["edcrm.storage"] = storage
    return SimpleNamespace(storage=storage, bucket=bucket, client=s3_server.client())


def bucket_keys(s3) -> list[str]:
    return [item["Key"] for item in s3.client.list_objects_v2(Bucket=s3.bucket).get("Contents", [])]


def test_an_upload_streams_to_s3(client, admin, callers, s3_storage, stub_broker):
    response = post_import(client, admin, telecaller_ids=[callers[0].id])

    assert response.status_code == 202
    lead_import = db.session.get(LeadImport, response.get_json()["id"])
    assert bucket_keys(s3_storage) == [f"edcrm/{lead_import.storage_key}"]
    body = s3_storage.client.get_object(Bucket=s3_storage.bucket, Key=f"edcrm/{lead_import.storage_key}")[
        "Body"
    ]
    assert body.read() == SAMPLE_CSV


def test_a_multipart_upload_over_the_limit_leaves_nothing_in_the_bucket(app, admin, callers, s3_storage):
    app.config["MAX_CSV_BYTES"] = 20 * 1024 * 1024  # over 8 MiB: S3 multipart parts are already sent
    rows = csv_bytes()[len(HEADER) :]
    stream = io.BytesIO(HEADER.encode() + rows * (21 * 1024 * 1024 // len(rows) + 1))

    with pytest.raises(upload_module.FileTooLarge):
        upload_module.start_import(admin, stream, "big.csv", [callers[0].id])

    assert bucket_keys(s3_storage) == []
    uploads = s3_storage.client.list_multipart_uploads(Bucket=s3_storage.bucket).get("Uploads", [])
    assert uploads == []  # aborted, not left to be billed
    assert import_count() == 0


def test_a_form_of_too_many_fields_is_413_saying_so(client, admin, callers):
    response = post_import(client, admin, telecaller_ids=[callers[0].id] * 1500)  # werkzeug takes 1000 parts

    error = error_of(response, 413)
    assert error["code"] == "form_too_large"
    assert import_count() == 0


# -- hostile bodies ----------------------------------------------------------------------------------------


def test_a_csv_shorter_than_its_content_length_is_400_and_nothing_is_kept(
    app, client, admin, callers, stub_broker
):
    body, content_type = form_body(
        {"telecaller_ids": str(callers[0].id), "file": (io.BytesIO(SAMPLE_CSV), "leads.csv")}
    )
    headers = {**bearer(admin), "Content-Type": content_type}
    # gunicorn terminates the stream itself: werkzeug reads it as it is, to its end.
    for sent, announced in ((body, len(body) + 5000), (body[:-100], len(body))):
        environ = {"wsgi.input_terminated": True, "CONTENT_LENGTH": str(announced)}
        response = client.post("/api/imports", data=sent, headers=headers, environ_overrides=environ)
        assert error_of(response, 400)["code"] == "incomplete_body"
    assert import_count() == 0 and stored_files(app) == []
    assert stub_broker.queues["csv_import"].qsize() == 0


def test_a_csv_refused_as_too_large_leaves_no_folder_in_storage(app, client, admin, callers, stub_broker):
    app.config["MAX_CSV_BYTES"] = 100 * 1024
    data = csv_bytes(VALID_ROWS * 600)  # over the limit, within the body's slack: refused while stored
    assert app.config["MAX_CSV_BYTES"] < len(data) < app.config["MAX_CSV_BYTES"] + 64 * 1024

    assert error_of(post_import(client, admin, data=data, telecaller_ids=[callers[0].id]), 413)
    root = Path(app.config["STORAGE_URL"].removeprefix("file://"))
    assert not root.exists() or list(root.rglob("*")) == []  # no empty imports/<uuid>/ either
