"""Integers, ids, cursors and bodies as clients send them: every integer range-checked (1..2^31-1 unless
a field says otherwise), path ids in ASCII digits only, cursors of an exact form, JSON bodies read
whatever their framing, URLs and headers bounded. Never a 5xx."""

from __future__ import annotations

import io
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edcrm.extensions import db
from edcrm.models import CallLog, CallOutcome, Job, JobState, Lead, Role
from edcrm.models.types import utcnow
from edcrm.routes.api.pagination import (
    ID_CURSOR,
    JOB_CURSOR,
    decode_cursor,
    decode_job_cursor,
    encode_cursor,
    encode_job_cursor,
)
from edcrm.routes.limits import MAX_HEADER_BYTES, MAX_URL_BYTES
from tests.support.imports import SAMPLE_CSV, imports_in, upload
from tests.support.pages import flashes
from tests.support.people import PASSWORD, bearer, make_user

MAX_ID = 2**31 - 1
FULL_WIDTH = {ord("0") + digit: 0xFF10 + digit for digit in range(10)}  # "1" -> "\uff11"


@pytest.fixture
def call_log(branch, telecaller):
    lead = Lead(
        branch_id=branch.id, telecaller_id=telecaller.id, student_name="Asha", phone_number="+919800000001"
    )
    call_log = CallLog(lead=lead, telecaller_id=telecaller.id, outcome=CallOutcome.CONNECTED)
    db.session.add(call_log)
    db.session.commit()
    return call_log


def error_of(response) -> dict:
    return response.get_json()["error"]


# -- ids in paths -------------------------------------------------------------------------------------------


def test_a_full_width_digit_in_a_path_is_no_id(client, telecaller, call_log):
    """`%EF%BC%91` is a full-width 1: werkzeug's own converter read it as 1 and served call log 1."""
    full_width = str(call_log.id).translate(FULL_WIDTH)
    assert client.get(f"/api/call-logs/{call_log.id}", headers=bearer(telecaller)).status_code == 200

    response = client.get(f"/api/call-logs/{full_width}", headers=bearer(telecaller))

    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


@pytest.mark.parametrize("segment", [str(2**31), str(2**63), "9" * 30, "0007", "-1", "1.0", "%201", "1%20"])
def test_ids_out_of_range_or_not_in_plain_digits_are_404(client, telecaller, call_log, segment):
    response = client.get(f"/api/call-logs/{segment}", headers=bearer(telecaller))

    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


def test_the_largest_id_is_looked_up_and_not_found(client, telecaller):
    assert client.get(f"/api/call-logs/{MAX_ID}", headers=bearer(telecaller)).status_code == 404


def test_a_chunk_index_past_the_integers_is_404(client, telecaller, call_log):
    body = {"call_log_id": call_log.id, "filename": "a.wav", "expected_chunks": 1}
    upload_id = client.post("/api/recordings/uploads", json=body, headers=bearer(telecaller)).get_json()[
        "upload_id"
    ]
    headers = {**bearer(telecaller), "Content-Type": "application/octet-stream"}

    huge = client.put(f"/api/recordings/uploads/{upload_id}/chunks/{2**63}", data=b"x", headers=headers)
    full_width = client.put(f"/api/recordings/uploads/{upload_id}/chunks/\uff10", data=b"x", headers=headers)

    assert (huge.status_code, full_width.status_code) == (404, 404)
    progress = client.get(f"/api/recordings/uploads/{upload_id}", headers=bearer(telecaller)).get_json()
    assert progress["received"] == []


def test_page_ids_are_ascii_digits_too(client, people):
    client.post("/login", data={"email": people.admin[1], "password": PASSWORD})
    assert client.get("/imports/%EF%BC%91").status_code == 404
    assert client.get(f"/imports/{2**63}").status_code == 404
    assert client.get(f"/recordings/{2**63}").status_code == 404


def test_retry_failed_is_no_job_id(client, admin):
    """GET /api/jobs/retry-failed is the POST-only route's path, not the job `retry-failed`."""
    response = client.get("/api/jobs/retry-failed", headers=bearer(admin))
    options = client.options("/api/jobs/retry-failed")

    assert response.status_code == 405
    assert set(options.headers["Allow"].split(", ")) == {"POST", "OPTIONS"}


# -- integers in bodies and query strings ------------------------------------------------------------------


@pytest.mark.parametrize("lead_id", [2**31, 2**63, -(2**63), 10**30])
def test_integers_out_of_range_in_json_are_422_naming_the_field(client, telecaller, call_log, lead_id):
    response = client.post(
        "/api/call-logs",
        json={"lead_id": lead_id, "outcome": "busy", "duration_seconds": 1},
        headers=bearer(telecaller),
    )

    assert response.status_code == 422
    assert set(error_of(response)["fields"]) == {"lead_id"}


def test_every_integer_of_an_upload_is_range_checked(client, telecaller, call_log):
    body = {"call_log_id": 2**63, "filename": "a.wav", "expected_chunks": 2**63, "total_size": 2**63}

    response = client.post("/api/recordings/uploads", json=body, headers=bearer(telecaller))

    assert response.status_code == 422
    assert set(error_of(response)["fields"]) == {"call_log_id", "expected_chunks", "total_size"}


@pytest.mark.parametrize("value", ["NaN", "Infinity", "1e400", "1.5", "true", '"7"'])
def test_numbers_that_are_no_whole_numbers_are_422(client, telecaller, call_log, value):
    raw = f'{{"lead_id": {value}, "outcome": "busy", "duration_seconds": 1}}'

    response = client.post(
        "/api/call-logs", data=raw, content_type="application/json", headers=bearer(telecaller)
    )

    assert response.status_code == 422
    assert error_of(response)["fields"] == {"lead_id": "must be a whole number"}


def test_null_is_an_absent_optional_field(client, telecaller, call_log):
    body = {
        "call_log_id": call_log.id,
        "filename": "a.wav",
        "expected_chunks": 1,
        "total_size": None,
        "sha256": None,
    }

    assert client.post("/api/recordings/uploads", json=body, headers=bearer(telecaller)).status_code == 201


@pytest.mark.parametrize("filename", ["", " ", "\t\r\n"])
def test_a_required_string_of_blanks_is_required(client, telecaller, call_log, filename):
    body = {"call_log_id": call_log.id, "filename": filename, "expected_chunks": 1}

    response = client.post("/api/recordings/uploads", json=body, headers=bearer(telecaller))

    assert response.status_code == 422
    assert error_of(response)["fields"] == {"filename": "is required"}


@pytest.mark.parametrize(
    "limit",
    [str(2**63), "-" + str(2**63), "\uff11\uff10", "\u0663", " 3", "+3", "3_0", "007", "", "0x10", "1e2"],
)
def test_query_integers_are_ascii_digits_in_range(client, telecaller, limit):
    """int() takes full-width and Arabic-Indic digits, " 3", "+3" and "3_0"; an empty `limit=` is no
    default either."""
    response = client.get("/api/leads", query_string={"limit": limit}, headers=bearer(telecaller))

    assert response.status_code == 422
    assert set(error_of(response)["fields"]) == {"limit"}


def test_an_empty_enum_in_a_query_is_invalid_and_an_empty_text_filter_is_none(client, admin):
    assert client.get("/api/jobs?state=", headers=bearer(admin)).status_code == 422
    assert client.get("/api/jobs?queue=&actor=", headers=bearer(admin)).status_code == 200


# -- ids in forms ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("telecaller_id", [str(2**63), str(2**31), "\uff11", "0", "007"])
def test_a_form_id_out_of_range_is_422_on_the_page(client, people, stub_broker, telecaller_id):
    """2^63 was an OverflowError (500) in the check of the chosen telecallers."""
    client.post("/login", data={"email": people.admin[1], "password": PASSWORD})

    response = upload(client, telecaller_ids=[telecaller_id])

    assert response.status_code == 422
    assert any(
        "telecaller" in message.lower() or "choice" in message.lower() for message in flashes(response)
    )
    assert imports_in(client.application) == []


@pytest.mark.parametrize("value", [str(2**63), "\uff11", "007", "1,,2", "1 2", "", ","])
def test_a_telecaller_id_field_that_is_no_id_list_is_422_on_the_api(client, admin, telecaller, value):
    form = {"telecaller_ids": value, "file": (io.BytesIO(SAMPLE_CSV), "leads.csv")}

    response = client.post(
        "/api/imports", data=form, content_type="multipart/form-data", headers=bearer(admin)
    )

    assert response.status_code == 422
    assert set(error_of(response)["fields"]) == {"telecaller_ids"}


# -- cursors ----------------------------------------------------------------------------------------------


@given(st.integers(0, MAX_ID))
def test_each_id_has_one_cursor_of_the_documented_form(after):
    cursor = encode_cursor(after)
    assert ID_CURSOR.fullmatch(cursor)
    assert decode_cursor(cursor) == after


@given(st.from_regex(ID_CURSOR, fullmatch=True))
def test_each_string_of_the_documented_form_is_a_cursor(cursor):
    after = decode_cursor(cursor)
    assert after is not None and encode_cursor(after) == cursor


@given(st.from_regex(JOB_CURSOR, fullmatch=True))
def test_each_string_of_the_job_cursor_form_is_a_position(cursor):
    position = decode_job_cursor(cursor)
    assert position is not None and decode_job_cursor(encode_job_cursor(position)) == position


def test_job_pages_follow_their_cursors(client, admin):
    now = utcnow()
    for n in range(5):
        db.session.add(
            Job(
                id=f"00000000-0000-4000-8000-00000000000{n}",
                actor="ping",
                queue="default",
                state=JobState.SUCCEEDED,
                branch_id=admin.branch_id,
                enqueued_at=now,
            )
        )
    db.session.commit()
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        body = client.get("/api/jobs", query_string=params, headers=bearer(admin)).get_json()
        seen += [job["id"] for job in body["items"]]
        cursor = body["next"]
        if cursor is None:
            break
        assert JOB_CURSOR.fullmatch(cursor)
    assert len(seen) == len(set(seen)) == 5


@pytest.mark.parametrize("cursor", ["", "1", "x.y", "1.", ".a", "1.a/b", "1" * 18 + ".a", "1." + "a" * 65])
def test_a_malformed_job_cursor_is_422(client, admin, cursor):
    response = client.get("/api/jobs", query_string={"cursor": cursor}, headers=bearer(admin))

    assert response.status_code == 422
    assert set(error_of(response)["fields"]) == {"cursor"}


# -- bodies whatever their framing ------------------------------------------------------------------------


def failed_job(branch_id: int, queue: str) -> str:
    job_id = f"failed-{queue}"
    db.session.add(
        Job(
            id=job_id,
            actor="ping",
            queue=queue,
            state=JobState.FAILED,
            branch_id=branch_id,
            enqueued_at=utcnow(),
        )
    )
    db.session.commit()
    return job_id


def chunked_post(client, path: str, body: bytes, headers: dict):
    """A POST as gunicorn hands a chunked one over: no Content-Length, a stream the server ends."""
    return client.post(
        path,
        input_stream=io.BytesIO(body),
        headers={**headers, "Transfer-Encoding": "chunked", "Content-Type": "application/json"},
        environ_overrides={"wsgi.input_terminated": True},
    )


def test_retry_failed_reads_a_chunked_body(client, admin, stub_broker):
    """With Transfer-Encoding: chunked there is no Content-Length: the filter was ignored and every failed
    job retried (a recordings job for a csv_import filter)."""
    recordings = failed_job(admin.branch_id, "recordings")

    response = chunked_post(
        client, "/api/jobs/retry-failed", json.dumps({"queue": "csv_import"}).encode(), bearer(admin)
    )

    assert response.status_code == 202
    assert response.get_json() == {"retried": 0, "job_ids": [], "remaining": 0}
    db.session.expire_all()
    assert db.session.get(Job, recordings).state is JobState.FAILED


@pytest.mark.parametrize(("body", "status"), [(b"", 202), (b"{}", 202), (b"[]", 422), (b"{", 422)])
def test_retry_failed_bodies_are_read_the_same_however_framed(client, admin, stub_broker, body, status):
    framed = client.post(
        "/api/jobs/retry-failed", data=body, headers={**bearer(admin), "Content-Type": "application/json"}
    )
    chunked = chunked_post(client, "/api/jobs/retry-failed", body, bearer(admin))

    assert framed.status_code == chunked.status_code == status


def test_a_chunked_body_of_another_type_is_415(client, admin):
    response = client.post(
        "/api/jobs/retry-failed",
        input_stream=io.BytesIO(b"queue=csv_import"),
        headers={
            **bearer(admin),
            "Transfer-Encoding": "chunked",
            "Content-Type": "application/x-www-form-urlencoded",
        },
        environ_overrides={"wsgi.input_terminated": True},
    )

    assert response.status_code == 415


# -- URL and header sizes ---------------------------------------------------------------------------------


def test_a_url_over_the_limit_is_414_as_json_on_the_api_and_a_page_elsewhere(client, telecaller):
    query = "q=" + "a" * MAX_URL_BYTES

    api = client.get(f"/api/leads?{query}", headers=bearer(telecaller))
    page = client.get(f"/login?{query}")

    assert api.status_code == 414 and error_of(api)["code"] == "request_uri_too_long"
    assert page.status_code == 414 and page.mimetype == "text/html"


def test_a_url_within_the_limit_is_served(client, telecaller):
    path = "/api/leads?"
    query = "padding=" + "a" * (MAX_URL_BYTES - len(path) - 8)

    assert client.get(f"{path}{query}", headers=bearer(telecaller)).status_code == 200


def test_headers_over_the_limit_are_431(client, telecaller):
    headers = {
        **bearer(telecaller),
        **{f"X-Padding-{n}": "a" * 1000 for n in range(MAX_HEADER_BYTES // 1000 + 1)},
    }

    response = client.get("/api/leads", headers=headers)

    assert response.status_code == 431
    assert error_of(response)["code"] == "request_header_fields_too_large"


def test_a_refused_request_reads_no_body(client, admin):
    """The size check comes first: nothing is parsed or stored for a refused request."""
    form = {"telecaller_ids": "1", "file": (io.BytesIO(SAMPLE_CSV), "leads.csv")}

    response = client.post(
        "/api/imports?" + "a" * MAX_URL_BYTES,
        data=form,
        content_type="multipart/form-data",
        headers=bearer(admin),
    )

    assert response.status_code == 414
    assert imports_in(client.application) == []


def test_an_admin_of_the_branch_is_still_needed(client, branch):
    """The size check answers before sign-in, and only refuses: a small request still needs the token."""
    outsider = make_user(branch, Role.TELECALLER, email="x@kochi.test")
    assert client.get("/api/jobs", headers=bearer(outsider)).status_code == 403
