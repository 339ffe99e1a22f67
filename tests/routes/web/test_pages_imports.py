"""The import pages: the upload form (CSRF, flash messages), the history, an import's live progress and
its error report, on the session cookie.

Like tests/routes/web/test_pages.py, no application context stays open between requests."""

from __future__ import annotations

import csv
import io
import re

import dramatiq
import pytest

from tests.support.imports import (
    DUPLICATE_ROW,
    INVALID_ROW,
    SAMPLE_CSV,
    csv_bytes,
    form_body,
    imports_in,
    stored_files,
    upload,
)
from tests.support.jobs import run_jobs, stop_worker
from tests.support.pages import csrf_token, flashes, text
from tests.support.people import PASSWORD, signed_in

# -- the form ----------------------------------------------------------------------------------------------


def test_the_form_lists_the_branchs_active_telecallers(client, people):
    signed_in(client, people.admin[1])

    response = client.get("/imports/new")

    assert response.status_code == 200
    page = text(response)
    assert 'enctype="multipart/form-data"' in page and 'type="file"' in page and 'name="file"' in page
    for caller_id, email in people.callers:
        assert re.search(
            rf'<input type="checkbox" name="telecaller_ids" value="{caller_id}">\s*{email}', page
        )
    assert "idle@kochi.test" not in page  # deactivated
    assert "caller@thrissur.test" not in page  # another branch
    assert "50 MiB" in page  # the limit, told before uploading


def test_the_pages_are_for_admins(client, people):
    assert client.get("/imports/new").headers["Location"].startswith("/login")
    signed_in(client, people.callers[0][1])

    for path in ("/imports/new", "/imports", "/imports/1", "/imports/1/progress", "/imports/1/errors.csv"):
        response = client.get(path)
        assert response.status_code == 403, path
        assert "admin role" in text(response)


def test_the_navigation_shows_imports_to_admins_only(app, people):
    admin, caller = (
        signed_in(app.test_client(), people.admin[1]),
        signed_in(app.test_client(), people.callers[0][1]),
    )

    assert 'href="/imports"' in text(admin.get("/"))
    assert 'href="/imports"' not in text(caller.get("/"))


def test_an_upload_goes_to_its_page_which_shows_progress_counts_and_distribution(
    app, client, people, stub_broker, stub_worker
):
    signed_in(client, people.admin[1])

    response = upload(client, telecaller_ids=[caller_id for caller_id, _ in people.callers])

    [lead_import] = imports_in(app)
    assert response.status_code == 302
    assert response.headers["Location"] == f"/imports/{lead_import.id}"
    assert lead_import.created_by_id == people.admin[0]

    run_jobs(stub_broker, stub_worker, "csv_import", fail_fast=True)
    page = text(client.get(f"/imports/{lead_import.id}"))
    assert f"Import #{lead_import.id} of leads.csv is queued." in page  # the flash message
    assert 'class="status status-completed"' in page
    # The bar's width follows aria-valuenow (imports.js): the Content-Security-Policy refuses style=.
    assert 'aria-valuenow="100"' in page and "style=" not in page
    assert re.search(r'data-field="successful_rows">6<', page)
    assert re.search(r'data-field="failed_rows">1<', page)
    assert re.search(r'data-field="duplicate_rows">1<', page)
    for _, email in people.callers:  # 6 leads over 2 telecallers, by email
        assert re.search(rf"<td>{re.escape(email)}</td><td class=\"num\">3</td>", page)
    assert f'href="/imports/{lead_import.id}/errors.csv"' in page
    assert "imports.js" in page  # the script that moves the bar


def test_the_progress_endpoint_feeds_the_page(app, client, people, stub_broker):
    signed_in(client, people.admin[1])
    upload(client, telecaller_ids=[people.callers[0][0]])
    [lead_import] = imports_in(app)

    before = client.get(f"/imports/{lead_import.id}/progress").get_json()
    assert (before["status"], before["percent"], before["final"]) == ("queued", 0, False)
    page = text(client.get(f"/imports/{lead_import.id}"))
    assert 'data-final="false"' in page
    assert f'data-progress-url="/imports/{lead_import.id}/progress"' in page

    worker = dramatiq.Worker(stub_broker, worker_timeout=50)  # started only now: the job waited until here
    worker.start()
    try:
        run_jobs(stub_broker, worker, "csv_import", fail_fast=True)
    finally:
        stop_worker(stub_broker, worker)
    after = client.get(f"/imports/{lead_import.id}/progress").get_json()
    assert (after["status"], after["percent"], after["final"]) == ("completed", 100, True)
    assert after["processed_rows"] == after["total_rows"] == 8
    assert after["distribution_rows"] == [
        {"telecaller_id": people.callers[0][0], "email": people.callers[0][1], "leads": 6}
    ]
    assert after["rejected_rows"] == 2


def test_the_error_report_downloads_with_the_session(app, client, people, stub_broker, stub_worker):
    signed_in(client, people.admin[1])
    upload(client, telecaller_ids=[people.callers[0][0]])
    [lead_import] = imports_in(app)
    run_jobs(stub_broker, stub_worker, "csv_import", fail_fast=True)

    response = client.get(f"/imports/{lead_import.id}/errors.csv")

    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"].startswith("attachment;")
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True).lstrip("\ufeff"))))
    assert [row[2:] for row in rows[1:]] == [INVALID_ROW.split(","), DUPLICATE_ROW.split(",")]


def test_the_history_lists_this_branchs_imports_newest_first(app, client, people, stub_broker):
    signed_in(client, people.admin[1])
    empty = text(client.get("/imports"))
    assert "No imports yet" in empty and 'href="/imports/new"' in empty

    upload(client, telecaller_ids=[people.callers[0][0]], filename="first.csv")
    upload(client, telecaller_ids=[people.callers[1][0]], filename="second.csv")
    other = signed_in(app.test_client(), people.other_admin[1])
    upload(other, telecaller_ids=[people.stranger[0]], filename="thrissur.csv")

    page = text(client.get("/imports"))
    table = page[page.index("<tbody>") :]
    assert table.index("second.csv") < table.index("first.csv")
    assert "thrissur.csv" not in page
    assert page.count('class="status status-queued"') == 2


def test_another_branchs_import_is_403(app, client, people, stub_broker):
    other = signed_in(app.test_client(), people.other_admin[1])
    upload(other, telecaller_ids=[people.stranger[0]], filename="thrissur.csv")
    [theirs] = imports_in(app)
    signed_in(client, people.admin[1])

    for path in (
        f"/imports/{theirs.id}",
        f"/imports/{theirs.id}/progress",
        f"/imports/{theirs.id}/errors.csv",
    ):
        assert client.get(path).status_code == 403, path
    assert client.get("/imports/99999").status_code == 404


# -- errors are flashed on the form, nothing is kept --------------------------------------------------------


def test_a_deactivated_or_foreign_telecaller_is_flashed_and_the_choice_kept(app, client, people):
    signed_in(client, people.admin[1])

    response = upload(client, telecaller_ids=[people.callers[0][0], people.idle[0], people.stranger[0]])

    assert response.status_code == 422
    [message] = flashes(response)
    assert str(people.stranger[0]) in message and "idle@kochi.test" in message
    # The form is shown again with the telecaller the admin had ticked still ticked.
    assert re.search(rf'value="{people.callers[0][0]}" checked>', text(response))
    assert imports_in(app) == [] and stored_files(app) == []


def test_a_form_without_file_or_telecallers_is_flashed(app, client, people):
    signed_in(client, people.admin[1])

    response = upload(client, data=None, telecaller_ids=[])

    assert response.status_code == 422
    assert set(flashes(response)) == {"Choose the CSV file to import.", "Choose at least one telecaller."}
    assert imports_in(app) == []


@pytest.mark.parametrize("limit", [100, 1024], ids=["counted-on-the-file", "refused-before-parsing"])
def test_a_file_over_the_limit_is_flashed_with_413(app, client, people, limit):
    app.config["MAX_CSV_BYTES"] = limit
    signed_in(client, people.admin[1])
    data = csv_bytes() if limit == 100 else csv_bytes(["Asha,9847012301,,Kochi"] * 20_000)

    response = upload(client, data=data, telecaller_ids=[people.callers[0][0]])

    assert response.status_code == 413
    [message] = flashes(response)
    assert "larger than the limit" in message
    assert 'name="file"' in text(response)  # the form again, to pick another file
    assert imports_in(app) == [] and stored_files(app) == []


def test_a_file_that_is_not_csv_is_flashed_with_415(app, client, people):
    signed_in(client, people.admin[1])

    response = upload(
        client, data=b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8, telecaller_ids=[people.callers[0][0]]
    )

    assert response.status_code == 415
    [message] = flashes(response)
    assert "not CSV" in message
    assert imports_in(app) == [] and stored_files(app) == []


# -- CSRF ----------------------------------------------------------------------------------------------------


@pytest.fixture
def csrf_app(app):
    """The same app with CSRF on, as it runs for real."""
    app.config["WTF_CSRF_ENABLED"] = True
    return app


def test_the_form_posts_with_its_csrf_token(csrf_app, people, stub_broker):
    client = csrf_app.test_client()
    token = csrf_token(text(client.get("/login")))
    client.post("/login", data={"email": people.admin[1], "password": PASSWORD, "csrf_token": token})

    token = csrf_token(text(client.get("/imports/new")))
    response = upload(client, telecaller_ids=[people.callers[0][0]], csrf_token=token)

    assert response.status_code == 302
    assert len(imports_in(csrf_app)) == 1


def test_the_form_without_its_csrf_token_is_refused(csrf_app, people):
    client = csrf_app.test_client()
    token = csrf_token(text(client.get("/login")))
    client.post("/login", data={"email": people.admin[1], "password": PASSWORD, "csrf_token": token})

    response = upload(client, telecaller_ids=[people.callers[0][0]])

    assert response.status_code == 400
    assert any("CSRF" in message for message in flashes(response))
    assert imports_in(csrf_app) == [] and stored_files(csrf_app) == []


def test_a_csv_cut_off_mid_body_is_400_and_nothing_is_kept(app, client, people, stub_broker):
    signed_in(client, people.admin[1])
    client.get("/imports/new")
    fields = {"telecaller_ids": str(people.callers[0][0]), "file": (io.BytesIO(SAMPLE_CSV), "leads.csv")}
    body, content_type = form_body(fields)
    environ = {"wsgi.input_terminated": True, "CONTENT_LENGTH": str(len(body) + 5000)}
    response = client.post("/imports/new", data=body, content_type=content_type, environ_overrides=environ)
    assert response.status_code == 400
    assert "before all of it arrived" in text(response)
    assert imports_in(app) == [] and stored_files(app) == []
