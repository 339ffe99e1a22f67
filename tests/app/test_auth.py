"""Bearer tokens for /api/: issuing, using, refusing and revoking them."""

from __future__ import annotations

from datetime import timedelta

import pytest

from edcrm.extensions import db
from edcrm.models import ApiToken
from edcrm.models.types import utcnow
from tests.support.people import bearer, make_user


def issue(client, email, password, **extra):
    return client.post("/api/auth/token", json={"email": email, "password": password, **extra})


def error_code(response) -> str:
    return response.get_json()["error"]["code"]


def test_a_token_is_issued_for_email_and_password_and_opens_the_api(client, telecaller):
    response = issue(client, "caller@kochi.test", "secret-password")

    assert response.status_code == 200
    body = response.get_json()
    assert body["user"] == {
        "id": telecaller.id,
        "email": "caller@kochi.test",
        "role": "telecaller",
        "branch_id": telecaller.branch_id,
    }
    leads = client.get("/api/leads", headers={"Authorization": f"Bearer {body['token']}"})
    assert leads.status_code == 200


def test_the_email_is_matched_whatever_its_case_and_spaces(client, telecaller):
    assert issue(client, "  Caller@Kochi.TEST ", "secret-password").status_code == 200


def test_the_token_is_stored_hashed_with_the_name_given(client, telecaller):
    token = issue(client, "caller@kochi.test", "secret-password", name="Pixel 7").get_json()["token"]

    stored = db.session.execute(db.select(ApiToken)).scalar_one()
    assert stored.name == "Pixel 7"
    assert token not in stored.token_hash


@pytest.mark.parametrize(
    ("email", "password"),
    [("caller@kochi.test", "wrong-password"), ("nobody@kochi.test", "secret-password")],
)
def test_wrong_credentials_are_refused_alike(client, telecaller, email, password):
    response = issue(client, email, password)

    assert response.status_code == 401
    assert error_code(response) == "invalid_credentials"
    assert db.session.execute(db.select(ApiToken)).first() is None


def test_a_deactivated_user_gets_no_token(client, branch):
    make_user(branch, email="gone@kochi.test", active=False)

    assert issue(client, "gone@kochi.test", "secret-password").status_code == 401


def test_missing_credentials_are_named(client):
    response = client.post("/api/auth/token", json={"email": "", "password": 42})

    assert response.status_code == 422
    assert set(response.get_json()["error"]["fields"]) == {"email", "password"}


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"data": "email=a&password=b", "content_type": "application/x-www-form-urlencoded"}, 415),
        ({"data": "{not json", "content_type": "application/json"}, 422),
        ({"json": ["a", "b"]}, 422),
        ({"data": "null", "content_type": "application/json"}, 422),
        ({"data": "", "content_type": "application/json"}, 422),
    ],
)
def test_a_body_that_is_not_a_json_object_is_refused_cleanly(client, kwargs, status):
    response = client.post("/api/auth/token", **kwargs)

    assert response.status_code == status
    assert response.is_json and "error" in response.get_json()


def test_an_oversized_json_body_is_413(client):
    big = '{"email": "' + "a" * (2 * 1024 * 1024) + '"}'
    response = client.post("/api/auth/token", data=big, content_type="application/json")

    assert response.status_code == 413
    assert response.is_json


def test_no_token_is_401_with_a_bearer_challenge(client):
    response = client.get("/api/leads")

    assert response.status_code == 401
    assert error_code(response) == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("header", ["Bearer not-a-token", "Bearer ", "Basic dXNlcjpwYXNz", "not-a-token"])
def test_a_bad_authorization_header_is_401(client, telecaller, header):
    response = client.get("/api/leads", headers={"Authorization": header})

    assert response.status_code == 401
    assert error_code(response) == "unauthorized"


def test_the_scheme_is_case_insensitive(client, telecaller):
    token = bearer(telecaller)["Authorization"].split()[1]

    assert client.get("/api/leads", headers={"Authorization": f"bearer {token}"}).status_code == 200


def test_a_session_cookie_does_not_open_the_api(client, telecaller):
    """The API is exempt from CSRF, so it must not accept what a browser sends on its own."""
    client.post("/login", data={"email": "caller@kochi.test", "password": "secret-password"})

    assert client.get("/api/leads").status_code == 401


def test_signing_out_revokes_only_that_token(client, telecaller):
    phone, tablet = bearer(telecaller), bearer(telecaller)

    assert client.delete("/api/auth/token", headers=phone).status_code == 204

    assert client.get("/api/leads", headers=phone).status_code == 401
    assert client.get("/api/leads", headers=tablet).status_code == 200


def test_a_deactivated_users_token_stops_working(client, telecaller):
    headers = bearer(telecaller)
    telecaller.active = False
    db.session.commit()

    assert client.get("/api/leads", headers=headers).status_code == 401


def test_a_wrong_role_is_403_not_401(client, admin, telecaller):
    response = client.post(
        "/api/call-logs",
        json={"lead_id": 1, "outcome": "busy", "duration_seconds": 0},
        headers=bearer(admin),
    )

    assert response.status_code == 403
    assert error_code(response) == "forbidden"
    assert "telecaller" in response.get_json()["error"]["message"]


def test_last_used_at_is_kept_at_most_once_a_minute(client, telecaller):
    headers = bearer(telecaller)
    token = db.session.execute(db.select(ApiToken)).scalar_one()
    assert token.last_used_at is None

    client.get("/api/leads", headers=headers)
    db.session.refresh(token)
    first = token.last_used_at
    assert first is not None and utcnow() - first < timedelta(seconds=5)

    client.get("/api/leads", headers=headers)
    db.session.refresh(token)
    assert token.last_used_at == first  # within the minute: not written again

    token.last_used_at = utcnow() - timedelta(minutes=2)
    db.session.commit()
    client.get("/api/leads", headers=headers)
    db.session.refresh(token)
    assert utcnow() - token.last_used_at < timedelta(seconds=5)


def test_unknown_api_paths_answer_json(client):
    response = client.get("/api/nothing-here")

    assert response.status_code == 404
    assert error_code(response) == "not_found"
