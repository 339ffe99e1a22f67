"""POST /api/call-logs (with notes and Idempotency-Key), GET /api/call-logs and GET /api/call-logs/ID: a
telecaller logs calls to their leads; they and the branch's admin read them."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from edcrm.actors.maintenance import prune_jobs
from edcrm.extensions import db
from edcrm.models import CallLog, CallOutcome, IdempotencyKey, Role
from edcrm.models.types import utcnow
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


# -- notes and unknown fields --------------------------------------------------------------------------


def test_notes_are_kept_and_answered(client, telecaller, lead):
    notes = "Wants the B.Tech brochure; call back after 6 pm. ✓ " + "x" * 1940
    created = log_call(
        client, telecaller, lead_id=lead.id, outcome="connected", duration_seconds=30, notes=notes
    )

    assert created.status_code == 201
    assert created.get_json()["notes"] == notes
    fetched = client.get(f"/api/call-logs/{created.get_json()['id']}", headers=bearer(telecaller))
    assert fetched.get_json()["notes"] == notes


def test_a_call_without_notes_has_null_notes(client, telecaller, lead):
    assert (
        log_call(client, telecaller, lead_id=lead.id, outcome="busy", duration_seconds=0).get_json()["notes"]
        is None
    )


def test_notes_over_2000_characters_are_422(client, telecaller, lead):
    response = log_call(
        client, telecaller, lead_id=lead.id, outcome="busy", duration_seconds=0, notes="n" * 2001
    )

    assert fields(response)["notes"] == "must be at most 2000 characters"
    assert db.session.execute(sa.select(CallLog)).first() is None


@pytest.mark.parametrize("extra", [{"note": "typo"}, {"telecaller_id": 1}, {"recording": None, "id": 5}])
def test_an_unknown_field_is_422_naming_it(client, telecaller, lead, extra):
    response = log_call(client, telecaller, lead_id=lead.id, outcome="busy", duration_seconds=0, **extra)

    named = set(fields(response))
    assert named == {name for name, value in extra.items() if value is not None}
    assert db.session.execute(sa.select(CallLog)).first() is None


# -- the list ------------------------------------------------------------------------------------------


def list_ids(client, user, query: str = "") -> list[int]:
    response = client.get(f"/api/call-logs{query}", headers=bearer(user))
    assert response.status_code == 200, response.get_json()
    return [item["id"] for item in response.get_json()["items"]]


def add_call(lead, telecaller, **fields) -> CallLog:
    call_log = CallLog(lead_id=lead.id, telecaller_id=telecaller.id, outcome=CallOutcome.BUSY, **fields)
    db.session.add(call_log)
    db.session.commit()
    return call_log


def test_a_telecaller_lists_their_own_calls_only(client, branch, telecaller, lead, other_branch):
    colleague = make_user(branch)
    mine = [add_call(lead, telecaller).id for _ in range(3)]
    add_call(make_lead(branch, colleague), colleague)
    # A call of a colleague's to a lead that is now this telecaller's is still the colleague's.
    add_call(lead, colleague)
    stranger = make_user(other_branch)
    add_call(make_lead(other_branch, stranger), stranger)

    assert list_ids(client, telecaller) == mine


def test_an_admin_lists_the_branchs_calls_and_no_other(client, branch, admin, telecaller, lead, other_branch):
    colleague = make_user(branch)
    ours = [add_call(lead, telecaller).id, add_call(make_lead(branch, colleague), colleague).id]
    stranger = make_user(other_branch)
    add_call(make_lead(other_branch, stranger), stranger)

    assert list_ids(client, admin) == ours
    assert list_ids(client, make_user(other_branch, Role.ADMIN)) == [ours[-1] + 1]


def test_calls_are_filtered_by_lead(client, branch, admin, telecaller, lead):
    other_lead = make_lead(branch, telecaller)
    first = add_call(lead, telecaller).id
    add_call(other_lead, telecaller)
    third = add_call(lead, telecaller).id

    assert list_ids(client, telecaller, f"?lead_id={lead.id}") == [first, third]
    assert list_ids(client, admin, f"?lead_id={lead.id}") == [first, third]
    assert list_ids(client, telecaller, "?lead_id=999999") == []


def test_call_logs_page_by_cursor(client, telecaller, lead):
    all_ids = [add_call(lead, telecaller).id for _ in range(5)]
    headers = bearer(telecaller)

    seen, url = [], f"/api/call-logs?lead_id={lead.id}&limit=2"
    while url:
        body = client.get(url, headers=headers).get_json()
        assert len(body["items"]) <= 2
        seen += [item["id"] for item in body["items"]]
        url = f"/api/call-logs?lead_id={lead.id}&limit=2&cursor={body['next']}" if body["next"] else None

    assert seen == all_ids


def test_listed_call_logs_are_the_same_as_read_one_by_one(client, telecaller, lead):
    add_call(lead, telecaller, notes="first")
    add_call(lead, telecaller, duration_seconds=12)
    headers = bearer(telecaller)

    items = client.get("/api/call-logs", headers=headers).get_json()["items"]

    assert items == [client.get(f"/api/call-logs/{item['id']}", headers=headers).get_json() for item in items]


@pytest.mark.parametrize("query", ["?limit=0", "?limit=501", "?cursor=nope", "?lead_id=abc"])
def test_a_bad_list_query_is_422(client, telecaller, query):
    assert client.get(f"/api/call-logs{query}", headers=bearer(telecaller)).status_code == 422


def test_listing_call_logs_needs_a_token(client):
    assert client.get("/api/call-logs").status_code == 401


# -- Idempotency-Key -----------------------------------------------------------------------------------


def call_logs() -> int:
    db.session.expire_all()
    return db.session.execute(sa.select(sa.func.count()).select_from(CallLog)).scalar()


def send(client, headers, key, **body):
    return client.post("/api/call-logs", json=body, headers={**headers, "Idempotency-Key": key})


def test_the_same_key_answers_the_first_answer_again_and_logs_once(client, telecaller, lead):
    headers = bearer(telecaller)
    body = {"lead_id": lead.id, "outcome": "connected", "duration_seconds": 42, "notes": "hi"}

    first = send(client, headers, "3f2a-retry-1", **body)
    again = send(client, headers, "3f2a-retry-1", **body)

    assert first.status_code == again.status_code == 201
    assert again.get_json() == first.get_json()
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert call_logs() == 1


def test_the_same_body_written_otherwise_is_the_same_request(client, telecaller, lead):
    headers = {**bearer(telecaller), "Idempotency-Key": "k", "Content-Type": "application/json"}
    first = client.post(
        "/api/call-logs",
        data=f'{{"lead_id": {lead.id}, "outcome": "busy", "duration_seconds": 3}}',
        headers=headers,
    )
    again = client.post(
        "/api/call-logs",
        data=f'{{"duration_seconds":3.0,"outcome":"busy","lead_id":{lead.id},"notes":null}}',
        headers=headers,
    )

    assert again.status_code == 201
    assert again.get_json() == first.get_json()
    assert call_logs() == 1


def test_another_body_with_the_same_key_is_422_and_logs_nothing(client, telecaller, lead):
    headers = bearer(telecaller)
    send(client, headers, "key-1", lead_id=lead.id, outcome="busy", duration_seconds=3)

    response = send(client, headers, "key-1", lead_id=lead.id, outcome="busy", duration_seconds=4)

    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "idempotency_key_reused"
    assert call_logs() == 1


def test_different_keys_log_different_calls(client, telecaller, lead):
    headers = bearer(telecaller)
    body = {"lead_id": lead.id, "outcome": "busy", "duration_seconds": 3}

    ids = {send(client, headers, key, **body).get_json()["id"] for key in ("a", "b", "c")}

    assert len(ids) == 3
    assert call_logs() == 3


def test_a_key_is_its_users_own(client, branch, telecaller, lead):
    colleague = make_user(branch)
    their_lead = make_lead(branch, colleague)

    mine = send(client, bearer(telecaller), "shared", lead_id=lead.id, outcome="busy", duration_seconds=1)
    theirs = send(
        client, bearer(colleague), "shared", lead_id=their_lead.id, outcome="busy", duration_seconds=1
    )

    assert mine.status_code == theirs.status_code == 201
    assert mine.get_json()["id"] != theirs.get_json()["id"]
    assert call_logs() == 2


def test_a_refused_request_is_not_remembered(client, branch, telecaller, lead):
    headers = bearer(telecaller)
    colleague_lead = make_lead(branch, make_user(branch))

    refused = send(client, headers, "k1", lead_id=colleague_lead.id, outcome="busy", duration_seconds=1)
    # The key was not spent: the corrected request (a different body) goes through.
    fixed = send(client, headers, "k1", lead_id=lead.id, outcome="busy", duration_seconds=1)

    assert (refused.status_code, fixed.status_code) == (403, 201)
    assert call_logs() == 1


def test_a_key_older_than_24_hours_is_a_new_request_and_is_pruned(client, telecaller, lead):
    headers = bearer(telecaller)
    body = {"lead_id": lead.id, "outcome": "busy", "duration_seconds": 1}
    first = send(client, headers, "old", **body).get_json()
    stored = db.session.execute(sa.select(IdempotencyKey)).scalar_one()
    stored.created_at = utcnow() - timedelta(hours=24, seconds=1)
    db.session.commit()

    again = send(client, headers, "old", **body)

    assert again.status_code == 201
    assert again.get_json()["id"] != first["id"]
    assert "Idempotent-Replayed" not in again.headers
    assert call_logs() == 2

    # The hourly pruner deletes expired keys and keeps live ones.
    db.session.execute(sa.update(IdempotencyKey).values(created_at=utcnow() - timedelta(hours=25)))
    send(client, headers, "fresh", **body)
    prune_jobs.fn()
    db.session.expire_all()
    assert db.session.execute(sa.select(IdempotencyKey.key)).scalars().all() == ["fresh"]


def test_a_key_just_under_24_hours_still_replays(client, telecaller, lead):
    headers = bearer(telecaller)
    body = {"lead_id": lead.id, "outcome": "busy", "duration_seconds": 1}
    first = send(client, headers, "recent", **body).get_json()
    stored = db.session.execute(sa.select(IdempotencyKey)).scalar_one()
    stored.created_at = utcnow() - timedelta(hours=23, minutes=59)
    db.session.commit()

    assert send(client, headers, "recent", **body).get_json() == first
    assert call_logs() == 1


@pytest.mark.parametrize("key", ["", "k" * 101, "caf\u00e9", "tab\there"])
def test_a_bad_key_is_422_naming_the_header(client, telecaller, lead, key):
    response = send(client, bearer(telecaller), key, lead_id=lead.id, outcome="busy", duration_seconds=1)

    assert fields(response) == {"Idempotency-Key": fields(response)["Idempotency-Key"]}
    assert call_logs() == 0


def test_a_key_of_100_characters_is_taken(client, telecaller, lead):
    response = send(
        client, bearer(telecaller), "k" * 100, lead_id=lead.id, outcome="busy", duration_seconds=1
    )

    assert response.status_code == 201
