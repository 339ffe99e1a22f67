"""GET /api/users: an admin's list of their branch's people, by role and by whether they are active."""

from __future__ import annotations

import pytest

from edcrm.models import Role
from tests.support.people import bearer, make_user


@pytest.fixture
def staff(branch, admin, other_branch):
    """The Kochi admin's colleagues, and Thrissur's people (never listed to Kochi)."""
    callers = [make_user(branch, email=f"c{n}@kochi.test") for n in (1, 2)]
    idle = make_user(branch, email="idle@kochi.test", active=False)
    second_admin = make_user(branch, Role.ADMIN, email="admin2@kochi.test")
    make_user(other_branch, email="c@thrissur.test")
    make_user(other_branch, Role.ADMIN, email="admin@thrissur.test")
    return {"admin": admin, "callers": callers, "idle": idle, "second_admin": second_admin}


def listed(client, user, query: str = "") -> list[str]:
    response = client.get(f"/api/users{query}", headers=bearer(user))
    assert response.status_code == 200, response.get_json()
    return [item["email"] for item in response.get_json()["items"]]


def test_an_admin_lists_their_branchs_users_only(client, admin, staff):
    assert listed(client, admin) == [
        "admin@kochi.test",
        "c1@kochi.test",
        "c2@kochi.test",
        "idle@kochi.test",
        "admin2@kochi.test",
    ]


def test_a_user_has_the_contracts_fields(client, admin, staff):
    items = client.get("/api/users?role=telecaller", headers=bearer(admin)).get_json()["items"]

    idle = staff["idle"]
    assert items[-1] == {
        "id": idle.id,
        "email": "idle@kochi.test",
        "role": "telecaller",
        "active": False,
        "branch_id": idle.branch_id,
    }


@pytest.mark.parametrize(
    ("query", "emails"),
    [
        ("?role=telecaller", ["c1@kochi.test", "c2@kochi.test", "idle@kochi.test"]),
        ("?role=admin", ["admin@kochi.test", "admin2@kochi.test"]),
        ("?role=telecaller&active=true", ["c1@kochi.test", "c2@kochi.test"]),
        ("?role=telecaller&active=false", ["idle@kochi.test"]),
        ("?active=false", ["idle@kochi.test"]),
        ("?role=admin&active=false", []),
    ],
)
def test_filters(client, admin, staff, query, emails):
    assert listed(client, admin, query) == emails


@pytest.mark.parametrize("query", ["?role=owner", "?active=yes", "?active=1", "?active=", "?role="])
def test_a_bad_filter_is_422(client, admin, query):
    response = client.get(f"/api/users{query}", headers=bearer(admin))

    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "validation_failed"


def test_telecallers_cannot_list_users(client, telecaller):
    response = client.get("/api/users", headers=bearer(telecaller))

    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "forbidden"


def test_listing_users_needs_a_token(client):
    assert client.get("/api/users").status_code == 401
