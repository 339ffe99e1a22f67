"""Hostile numbers, digits and framings against the real gunicorn: every integer is range-checked and
every id is ASCII digits (404 in a path, 422 elsewhere, never a 5xx), a JSON body is read whatever its
framing, and over-long URLs and headers are refused with the documented errors."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import requests

from tests.support.processes import REPO

HUGE = 2**63  # past every integer column: an OverflowError (SQLite) or a refused comparison (PostgreSQL)
FULL_WIDTH = {ord("0") + digit: 0xFF10 + digit for digit in range(10)}  # "1" -> "\uff11"

#: A failed job of the branch of the user whose id is argv[1], on queue argv[2]; prints its id. Its actor
#: serves no record (a retry of a recording job whose upload is gone would be refused).
MAKE_FAILED_JOB = """
import sys, uuid
from edcrm import create_app
from edcrm.extensions import db
from edcrm.models import Job, JobState, User
from edcrm.models.types import utcnow
app = create_app()
with app.app_context():
    user = db.session.get(User, int(sys.argv[1]))
    job = Job(id=str(uuid.uuid4()), actor="ping", queue=sys.argv[2], args=[],
              state=JobState.FAILED, branch_id=user.branch_id, enqueued_at=utcnow(), finished_at=utcnow())
    db.session.add(job)
    db.session.commit()
    print(job.id)
"""


def failed_job(server, queue: str) -> str:
    argv = [sys.executable, "-c", MAKE_FAILED_JOB, str(server.admin["id"]), queue]
    made = subprocess.run(argv, env=server.env, cwd=REPO, capture_output=True, text=True, check=True)
    return made.stdout.strip()


def percent_encoded(text: str) -> str:
    return requests.utils.quote(text, safe="")


def error_of(response: requests.Response) -> dict:
    assert response.headers["Content-Type"].startswith("application/json"), response.text[:300]
    return response.json()["error"]


def signed_in(server, who: dict) -> requests.Session:
    """A browser session of who, signed in through the login form (with its CSRF token)."""
    browser = requests.Session()
    page = browser.get(f"{server.base}/login", timeout=30).text
    form = {"email": who["email"], "password": who["password"], "csrf_token": csrf_token(page)}
    signed = browser.post(f"{server.base}/login", data=form, allow_redirects=False, timeout=30)
    assert signed.status_code == 302, signed.text[:300]
    return browser


def csrf_token(page: str) -> str:
    return re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page)[1]


# -- item 8: ids and integers ---------------------------------------------------------------------------


def test_a_full_width_digit_does_not_reach_the_record(server):
    """werkzeug's int converter read `%EF%BC%91` (a full-width 1) as 1 and served that call log."""
    plain = server.api("GET", f"/api/call-logs/{server.call_log_id}")
    full_width = server.api(
        "GET", f"/api/call-logs/{percent_encoded(str(server.call_log_id).translate(FULL_WIDTH))}"
    )

    assert plain.status_code == 200
    assert full_width.status_code == 404
    assert error_of(full_width)["code"] == "not_found"


@pytest.mark.parametrize(
    ("path", "who"),
    [
        (f"/api/call-logs/{HUGE}", "telecaller"),
        (f"/api/call-logs/{HUGE}/recording/content", "telecaller"),
        (f"/api/imports/{HUGE}", "admin"),
        (f"/api/imports/{2**31}/errors.csv", "admin"),
        ("/api/imports/%EF%BC%90", "admin"),
    ],
)
def test_ids_past_the_integers_in_paths_are_404(server, path, who):
    response = server.api("GET", path, who=server.admin if who == "admin" else None)

    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


def test_a_chunk_index_past_the_integers_is_404_and_nothing_is_kept(server):
    body = {"call_log_id": server.new_call_log(), "filename": "a.wav", "expected_chunks": 2}
    upload_id = server.api("POST", "/api/recordings/uploads", json=body).json()["upload_id"]
    headers = {"Content-Type": "application/octet-stream"}

    for index in (str(HUGE), "%EF%BC%90"):
        response = server.api(
            "PUT", f"/api/recordings/uploads/{upload_id}/chunks/{index}", data=b"x", headers=headers
        )
        assert response.status_code == 404

    assert server.api("GET", f"/api/recordings/uploads/{upload_id}").json()["received"] == []


@pytest.mark.parametrize(
    ("path", "body", "fields"),
    [
        (
            "/api/call-logs",
            {"lead_id": HUGE, "outcome": "busy", "duration_seconds": HUGE},
            {"lead_id", "duration_seconds"},
        ),
        (
            "/api/recordings/uploads",
            {"call_log_id": HUGE, "filename": "a.wav", "expected_chunks": HUGE, "total_size": HUGE},
            {"call_log_id", "expected_chunks", "total_size"},
        ),
    ],
)
def test_integers_past_the_columns_in_json_are_422_naming_each(server, path, body, fields):
    response = server.api("POST", path, json=body)

    assert response.status_code == 422
    assert set(error_of(response)["fields"]) == fields


@pytest.mark.parametrize(
    ("path", "who"),
    [
        (f"/api/leads?limit={HUGE}", "telecaller"),
        ("/api/leads?limit=%EF%BC%95", "telecaller"),  # a full-width 5: int() reads it as 5
        (f"/api/jobs?limit={HUGE}", "admin"),
        (f"/api/imports?limit={HUGE}", "admin"),
        ("/api/imports?limit=%D9%A3", "admin"),  # an Arabic-Indic 3
    ],
)
def test_integers_in_query_strings_are_ascii_digits_in_range(server, path, who):
    response = server.api("GET", path, who=server.admin if who == "admin" else None)

    assert response.status_code == 422
    assert set(error_of(response)["fields"]) == {"limit"}


@pytest.mark.parametrize("telecaller_id", [str(HUGE), "\uff12"])
def test_a_form_id_past_the_integers_is_a_422_page_not_a_500(server, telecaller_id):
    """/imports/new with a telecaller id of 2^63 was an OverflowError in the telecaller check."""
    browser = signed_in(server, server.admin)
    token = csrf_token(browser.get(f"{server.base}/imports/new", timeout=30).text)
    form = {"csrf_token": token, "telecaller_ids": telecaller_id}
    files = {"file": ("leads.csv", b"name,phone\nAsha,9876543210\n", "text/csv")}

    response = browser.post(f"{server.base}/imports/new", data=form, files=files, timeout=30)

    assert response.status_code == 422
    assert response.headers["Content-Type"].startswith("text/html")
    assert 'class="flash flash-error"' in response.text


def test_a_telecaller_id_past_the_integers_is_422_on_the_api(server):
    files = {"file": ("leads.csv", b"name,phone\nAsha,9876543210\n", "text/csv")}

    response = server.api(
        "POST", "/api/imports", who=server.admin, data={"telecaller_ids": str(HUGE)}, files=files
    )

    assert response.status_code == 422
    assert set(error_of(response)["fields"]) == {"telecaller_ids"}


# -- item 11: JSON bodies whatever their framing -------------------------------------------------------


def retry_failed_chunked(server, body: bytes) -> requests.Response:
    """POST /api/jobs/retry-failed with Transfer-Encoding: chunked (a generator body: no length)."""
    halves = iter([body[: len(body) // 2], body[len(body) // 2 :]])
    headers = {"Content-Type": "application/json"}
    return server.api("POST", "/api/jobs/retry-failed", who=server.admin, data=halves, headers=headers)


def job_state(server, job_id: str) -> str:
    return server.api("GET", f"/api/jobs/{job_id}", who=server.admin).json()["state"]


def test_retry_failed_reads_a_chunked_body(server):
    """Sent chunked, the filter was ignored: a csv_import filter retried a recordings job."""
    recordings_job = failed_job(server, "recordings")

    csv_only = retry_failed_chunked(server, b'{"queue": "csv_import"}')

    assert csv_only.request.headers.get("Transfer-Encoding") == "chunked"
    assert "Content-Length" not in csv_only.request.headers
    assert csv_only.status_code == 202
    assert recordings_job not in csv_only.json()["job_ids"]
    assert job_state(server, recordings_job) == "failed"

    recordings = retry_failed_chunked(server, b'{"queue": "recordings"}')

    assert recordings.status_code == 202
    assert recordings_job in recordings.json()["job_ids"]
    assert job_state(server, recordings_job) != "failed"


def test_a_chunked_body_that_is_not_json_is_refused(server):
    not_json = retry_failed_chunked(server, b'{"queue": ')
    not_an_object = retry_failed_chunked(server, b'["csv_import"]')

    assert (not_json.status_code, not_an_object.status_code) == (422, 422)
    assert error_of(not_json)["code"] == error_of(not_an_object)["code"] == "invalid_json"


def test_chunked_framing_on_the_wire(server):
    """The same, framed by hand: two chunks, then the last one."""
    body = b'{"queue": "csv_import"}'
    request = (
        b"POST /api/jobs/retry-failed HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + f"Authorization: Bearer {server.admin['token']}\r\n".encode()
        + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        + b"%x\r\n%s\r\n" % (10, body[:10])
        + b"%x\r\n%s\r\n" % (len(body) - 10, body[10:])
        + b"0\r\n\r\n"
    )
    recordings_job = failed_job(server, "recordings")

    status, answer = server.raw(request)

    assert status == 202, answer[:500]
    assert recordings_job.encode() not in answer
    assert job_state(server, recordings_job) == "failed"


# -- item 22: URLs and headers over the limits --------------------------------------------------------


def test_a_long_url_is_the_apps_414_and_a_longer_one_gunicorns(server):
    app_limit = server.api("GET", "/api/leads?q=" + "a" * 5000)
    gunicorn_limit = server.api("GET", "/api/leads?q=" + "a" * 9000)

    assert app_limit.status_code == 414
    assert error_of(app_limit)["code"] == "request_uri_too_long"
    assert gunicorn_limit.status_code == 414
    assert gunicorn_limit.headers["Content-Type"] == "text/html"


def test_many_headers_are_the_apps_431_and_a_long_one_gunicorns(server):
    many = server.api("GET", "/api/leads", headers={f"X-Padding-{n}": "a" * 1000 for n in range(20)})
    long = server.api("GET", "/api/leads", headers={"X-Padding": "a" * 9000})

    assert many.status_code == 431
    assert error_of(many)["code"] == "request_header_fields_too_large"
    assert long.status_code == 431
    assert long.headers["Content-Type"] == "text/html"


def test_the_server_still_answers(server):
    assert requests.get(f"{server.base}/healthz", timeout=10).status_code == 200
