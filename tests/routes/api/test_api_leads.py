"""GET /api/leads: who sees which leads, and paging through them."""

from __future__ import annotations

import itertools

import pytest

from edcrm.models import Role
from tests.support.leads import make_lead
from tests.support.people import bearer, make_user


def ids(response) -> list[int]:
    return [item["id"] for item in response.get_json()["items"]]


def walk(client, headers, limit: int) -> list[list[int]]:
    """Every page, following next until it is null."""
    pages, url = [], f"/api/leads?limit={limit}"
    while url:
        response = client.get(url, headers=headers)
        assert response.status_code == 200
        pages.append(ids(response))
        cursor = response.get_json()["next"]
        url = f"/api/leads?limit={limit}&cursor={cursor}" if cursor else None
    return pages


def test_a_telecaller_sees_only_the_leads_assigned_to_them(client, branch, telecaller, other_branch):
    colleague = make_user(branch)
    mine = [make_lead(branch, telecaller).id for _ in range(3)]
    make_lead(branch, colleague)
    make_lead(branch)  # not assigned yet
    make_lead(other_branch, make_user(other_branch))

    response = client.get("/api/leads", headers=bearer(telecaller))

    assert response.status_code == 200
    assert ids(response) == mine
    assert response.get_json()["next"] is None


def test_an_admin_sees_every_lead_of_their_branch_and_no_other(client, branch, admin, other_branch):
    telecaller = make_user(branch)
    branch_leads = [make_lead(branch, telecaller).id, make_lead(branch).id]
    make_lead(other_branch)

    assert ids(client.get("/api/leads", headers=bearer(admin))) == branch_leads


def test_an_admin_of_another_branch_sees_none_of_these(client, branch, telecaller, other_branch):
    make_lead(branch, telecaller)
    other_admin = make_user(other_branch, Role.ADMIN)

    assert ids(client.get("/api/leads", headers=bearer(other_admin))) == []


def test_a_lead_has_the_contracts_fields(client, branch, telecaller):
    lead = make_lead(branch, telecaller, name="Anjali Menon")

    item = client.get("/api/leads", headers=bearer(telecaller)).get_json()["items"][0]

    assert item == {
        "id": lead.id,
        "student_name": "Anjali Menon",
        "phone_number": lead.phone_number,
        "email": None,
        "city": None,
        "status": "new",
        "telecaller_id": telecaller.id,
        "import_id": None,
    }


def test_pages_cover_every_lead_once_in_order(client, branch, telecaller):
    all_ids = [make_lead(branch, telecaller).id for _ in range(7)]

    pages = walk(client, bearer(telecaller), limit=3)

    assert [len(page) for page in pages] == [3, 3, 1]
    assert list(itertools.chain(*pages)) == all_ids


def test_an_exact_multiple_of_the_limit_ends_with_next_null(client, branch, telecaller):
    for _ in range(4):
        make_lead(branch, telecaller)

    pages = walk(client, bearer(telecaller), limit=2)

    assert [len(page) for page in pages] == [2, 2]


def test_leads_added_while_paging_are_not_missed_nor_repeated(client, branch, telecaller):
    headers = bearer(telecaller)
    first_ids = [make_lead(branch, telecaller).id for _ in range(3)]
    first = client.get("/api/leads?limit=2", headers=headers).get_json()

    added = make_lead(branch, telecaller).id
    rest = client.get(f"/api/leads?limit=10&cursor={first['next']}", headers=headers)

    seen = [item["id"] for item in first["items"]] + ids(rest)
    assert seen == [*first_ids, added]


def test_the_default_limit_is_50(client, branch, telecaller):
    for _ in range(51):
        make_lead(branch, telecaller)

    body = client.get("/api/leads", headers=bearer(telecaller)).get_json()

    assert len(body["items"]) == 50
    assert body["next"] is not None


@pytest.mark.parametrize("limit", ["1", "500"])
def test_limits_at_the_bounds_are_accepted(client, telecaller, limit):
    assert client.get(f"/api/leads?limit={limit}", headers=bearer(telecaller)).status_code == 200


@pytest.mark.parametrize("limit", ["0", "501", "-1", "ten", "2.5", "9" * 4000])
def test_a_limit_out_of_bounds_is_422(client, telecaller, limit):
    response = client.get(f"/api/leads?limit={limit}", headers=bearer(telecaller))

    assert response.status_code == 422
    assert "limit" in response.get_json()["error"]["fields"]


# Not of the form; non-zero padding bits; 2**31 (beyond the INTEGER ids); empty; a NUL; old JSON cursors.
@pytest.mark.parametrize(
    "cursor",
    ["garbage", "bnVsbB", "gAAAAA", "", "%00", "eyJhZnRlciI6ICJ4In0", "eyJhZnRlciI6MTA5OTUxMTYyNzc3Nn0"],
)
def test_a_cursor_we_did_not_issue_is_422(client, telecaller, cursor):
    response = client.get(f"/api/leads?cursor={cursor}", headers=bearer(telecaller))

    assert response.status_code == 422
    assert "cursor" in response.get_json()["error"]["fields"]


def test_leads_need_a_token(client):
    assert client.get("/api/leads").status_code == 401
