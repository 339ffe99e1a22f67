"""POST /api/call-logs and GET /api/call-logs/ID: a telecaller logs calls to their leads."""

from __future__ import annotations

import pytest

from edcrm.extensions import db
from edcrm.models import CallLog, CallOutcome, Role
from tests.support.leads import make_lead
from tests.support.people import bearer, make_user


@pytest.fixture
def lead(branch, telecaller):
    return make_lead(branch, telecaller)


def log_call(client, user, **body):
    return client.post("/api/call-logs", json=body, headers=bearer(user))


def fields(response) -> dict:
    assert response.status_code == 422, response.get_json()
    return response.get_json()["error"]["fields"]


def test_a_telecaller_logs_a_call_to_their_lead(client, telecaller, lead):
    response = log_call(client, telecaller, lead_id=lead.id, outcome="connected", duration_seconds=95)

    assert response.status_code == 201
    body = response.get_json()
    assert body["lead_id"] == lead.id
    assert body["telecaller_id"] == telecaller.id
    assert body["outcome"] == "connected"
    assert body["duration_seconds"] == 95
    assert body["recording"] is None
    assert response.headers["Location"].endswith(f"/api/call-logs/{body['id']}")
    stored = db.session.get(CallLog, body["id"])
    assert (stored.lead_id, stored.outcome, stored.duration_seconds) == (lead.id, CallOutcome.CONNECTED, 95)


def test_the_logged_call_can_be_read_back(client, telecaller, lead):
    headers = bearer(telecaller)
    created = client.post(
        "/api/call-logs",
        json={"lead_id": lead.id, "outcome": "no_answer", "duration_seconds": 0},
        headers=headers,
    ).get_json()

    response = client.get(f"/api/call-logs/{created['id']}", headers=headers)

    assert response.status_code == 200
    assert response.get_json() == created
    assert {"id", "lead_id", "telecaller_id", "outcome", "duration_seconds", "recording"} <= created.keys()


def test_a_colleagues_lead_is_403(client, branch, telecaller):
    colleague_lead = make_lead(branch, make_user(branch))

    response = log_call(client, telecaller, lead_id=colleague_lead.id, outcome="busy", duration_seconds=0)

    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "forbidden"
    assert db.session.execute(db.select(CallLog)).first() is None


def test_an_unassigned_lead_is_403(client, branch, telecaller):
    response = log_call(client, telecaller, lead_id=make_lead(branch).id, outcome="busy", duration_seconds=0)

    assert response.status_code == 403


def test_an_unknown_lead_is_404(client, telecaller):
    response = log_call(client, telecaller, lead_id=999_999, outcome="busy", duration_seconds=0)

    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"


def test_an_admin_cannot_log_calls(client, admin, lead):
    response = log_call(client, admin, lead_id=lead.id, outcome="busy", duration_seconds=0)

    assert response.status_code == 403


def test_every_missing_field_is_named_at_once(client, telecaller):
    assert set(fields(log_call(client, telecaller))) == {"lead_id", "outcome", "duration_seconds"}


def test_an_unknown_outcome_lists_the_allowed_ones(client, telecaller, lead):
    response = log_call(client, telecaller, lead_id=lead.id, outcome="voicemail", duration_seconds=3)

    message = fields(response)["outcome"]
    for outcome in ("connected", "no_answer", "busy", "invalid_number"):
        assert outcome in message


@pytest.mark.parametrize("duration", [-1, 1.5, "10", True, None, 10**12])
def test_duration_must_be_a_whole_number_of_seconds(client, telecaller, lead, duration):
    response = log_call(client, telecaller, lead_id=lead.id, outcome="busy", duration_seconds=duration)

    assert set(fields(response)) == {"duration_seconds"}


@pytest.mark.parametrize("lead_id", ["1", 0, -3, 1.5, [1], True])
def test_lead_id_must_be_a_positive_integer(client, telecaller, lead_id):
    response = log_call(client, telecaller, lead_id=lead_id, outcome="busy", duration_seconds=1)

    assert set(fields(response)) == {"lead_id"}


def test_a_huge_lead_id_is_422_not_an_error(client, telecaller):
    response = log_call(client, telecaller, lead_id=2**70, outcome="busy", duration_seconds=1)

    assert response.status_code == 422
    assert fields(response)["lead_id"] == f"must be at most {2**31 - 1}"


def test_a_whole_number_written_as_a_float_is_that_number(client, telecaller, lead):
    """JSON Schema's integer: 86400.0 is 86400 (JavaScript clients cannot tell them apart)."""
    body = {"lead_id": float(lead.id), "outcome": "busy", "duration_seconds": 86_400.0}
    response = client.post("/api/call-logs", json=body, headers=bearer(telecaller))

    assert response.status_code == 201
    assert (response.get_json()["lead_id"], response.get_json()["duration_seconds"]) == (lead.id, 86_400)


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"data": "lead_id=1", "content_type": "application/x-www-form-urlencoded"}, 415),
        ({"data": "{", "content_type": "application/json"}, 422),
        ({"data": "[1, 2]", "content_type": "application/json"}, 422),
    ],
)
def test_a_body_that_is_not_a_json_object_is_refused(client, telecaller, kwargs, status):
    response = client.post("/api/call-logs", headers=bearer(telecaller), **kwargs)

    assert response.status_code == status
    assert response.is_json


def test_the_branch_admin_reads_a_call_log_of_their_telecaller(client, admin, telecaller, lead):
    created = log_call(client, telecaller, lead_id=lead.id, outcome="busy", duration_seconds=4).get_json()

    response = client.get(f"/api/call-logs/{created['id']}", headers=bearer(admin))

    assert response.status_code == 200
    assert response.get_json()["telecaller_id"] == telecaller.id


def test_another_telecaller_cannot_read_it(client, branch, telecaller, lead):
    created = log_call(client, telecaller, lead_id=lead.id, outcome="busy", duration_seconds=4).get_json()

    response = client.get(f"/api/call-logs/{created['id']}", headers=bearer(make_user(branch)))

    assert response.status_code == 403


def test_an_admin_of_another_branch_cannot_read_it(client, telecaller, lead, other_branch):
    created = log_call(client, telecaller, lead_id=lead.id, outcome="busy", duration_seconds=4).get_json()
    other_admin = make_user(other_branch, Role.ADMIN)

    response = client.get(f"/api/call-logs/{created['id']}", headers=bearer(other_admin))

    assert response.status_code == 403


@pytest.mark.parametrize("call_log_id", ["12345", "99999999999999999999999"])
def test_an_unknown_call_log_is_404(client, telecaller, call_log_id):
    response = client.get(f"/api/call-logs/{call_log_id}", headers=bearer(telecaller))

    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"


def test_reading_a_call_log_needs_a_token(client, telecaller, lead):
    call_log = CallLog(lead_id=lead.id, telecaller_id=telecaller.id, outcome=CallOutcome.BUSY)
    db.session.add(call_log)
    db.session.commit()

    assert client.get(f"/api/call-logs/{call_log.id}").status_code == 401
