"""GET /api/leads (who sees which leads, paging, filters and search), GET and PATCH /api/leads/ID."""

from __future__ import annotations

import itertools
from datetime import datetime

import pytest

from edcrm.extensions import db
from edcrm.models import Lead, LeadImport, LeadStatus, Role
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
        "alternate_phone": None,
        "course": None,
        "university": None,
        "source": None,
        "created_at": item["created_at"],
    }
    assert datetime.fromisoformat(item["created_at"]) == lead.created_at


def test_every_field_of_an_imported_lead_is_in_the_api(client, branch, telecaller):
    lead = make_lead(branch, telecaller, name="Rahul Nair")
    lead.email, lead.city, lead.alternate_phone = "rahul@example.test", "Kochi", "+919400000001"
    lead.course, lead.university, lead.source = "B.Tech", "CUSAT", "Instagram"
    db.session.commit()

    item = client.get(f"/api/leads/{lead.id}", headers=bearer(telecaller)).get_json()

    assert (item["email"], item["city"], item["alternate_phone"]) == (
        "rahul@example.test",
        "Kochi",
        "+919400000001",
    )
    assert (item["course"], item["university"], item["source"]) == ("B.Tech", "CUSAT", "Instagram")


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


# -- filters -------------------------------------------------------------------------------------------


def lead_with(branch, telecaller=None, *, phone: str, name: str = "Student", **fields) -> Lead:
    lead = Lead(
        branch_id=branch.id,
        telecaller_id=telecaller.id if telecaller else None,
        student_name=name,
        phone_number=phone,
        **fields,
    )
    db.session.add(lead)
    db.session.commit()
    return lead


def make_import(branch) -> LeadImport:
    lead_import = LeadImport(branch_id=branch.id, filename="leads.csv", telecaller_ids=[])
    db.session.add(lead_import)
    db.session.commit()
    return lead_import


def test_an_admin_filters_by_telecaller_import_and_status(client, branch, admin, callers):
    first, second = make_import(branch), make_import(branch)
    a = lead_with(branch, callers[0], phone="+919800000001", import_id=first.id)
    b = lead_with(branch, callers[1], phone="+919800000002", import_id=first.id, status=LeadStatus.ENROLLED)
    c = lead_with(branch, callers[1], phone="+919800000003", import_id=second.id, status=LeadStatus.ENROLLED)
    headers = bearer(admin)

    def listed(query: str) -> list[int]:
        response = client.get(f"/api/leads?{query}", headers=headers)
        assert response.status_code == 200, response.get_json()
        return ids(response)

    assert listed(f"telecaller_id={callers[1].id}") == [b.id, c.id]
    assert listed(f"import_id={first.id}") == [a.id, b.id]
    assert listed("status=enrolled") == [b.id, c.id]
    assert listed(f"status=enrolled&import_id={first.id}&telecaller_id={callers[1].id}") == [b.id]
    assert listed("status=lost") == []


def test_a_telecaller_filtering_by_a_colleague_sees_nothing_of_theirs(client, branch, telecaller):
    colleague = make_user(branch)
    make_lead(branch, colleague)

    response = client.get(f"/api/leads?telecaller_id={colleague.id}", headers=bearer(telecaller))

    assert response.status_code == 200
    assert ids(response) == []


def test_an_admin_filtering_by_another_branchs_import_sees_nothing(client, branch, admin, other_branch):
    theirs = make_import(other_branch)
    lead_with(other_branch, phone="+919800000009", import_id=theirs.id)

    assert ids(client.get(f"/api/leads?import_id={theirs.id}", headers=bearer(admin))) == []


def test_pages_stay_stable_under_filters(client, branch, telecaller):
    wanted = []
    for n in range(7):
        status = LeadStatus.INTERESTED if n % 2 else LeadStatus.NEW
        lead = lead_with(branch, telecaller, phone=f"+91980000010{n}", status=status)
        if status is LeadStatus.INTERESTED:
            wanted.append(lead.id)
    headers = bearer(telecaller)

    first = client.get("/api/leads?status=interested&limit=2", headers=headers).get_json()
    # A lead changing status meanwhile neither repeats nor hides another.
    db.session.get(Lead, wanted[0]).status = LeadStatus.LOST
    db.session.commit()
    rest = client.get(f"/api/leads?status=interested&limit=10&cursor={first['next']}", headers=headers)

    assert [item["id"] for item in first["items"]] + ids(rest) == wanted


@pytest.mark.parametrize(
    ("query", "field"),
    [("status=maybe", "status"), ("telecaller_id=x", "telecaller_id"), ("import_id=0", "import_id")],
)
def test_a_bad_filter_is_422_naming_it(client, telecaller, query, field):
    response = client.get(f"/api/leads?{query}", headers=bearer(telecaller))

    assert response.status_code == 422
    assert field in response.get_json()["error"]["fields"]


# -- search --------------------------------------------------------------------------------------------


def make_searchable(branch, telecaller) -> dict[str, Lead]:
    """Leads with names and numbers to search, by a short name."""
    return {
        "anjali": lead_with(branch, telecaller, phone="+919876543210", name="Anjali Menon"),
        "rahul": lead_with(branch, telecaller, phone="+919812345678", name="Rahul K. Nair"),
        "meera": lead_with(branch, telecaller, phone="+918765098765", name="Meera Anand-Pillai"),
        "uk": lead_with(branch, telecaller, phone="+447700900123", name="Oliver Menezes"),
    }


@pytest.fixture
def searchable(branch, telecaller):
    return make_searchable(branch, telecaller)


def found(client, user, q: str) -> set[int]:
    response = client.get("/api/leads", query_string={"q": q}, headers=bearer(user))
    assert response.status_code == 200, response.get_json()
    return set(ids(response))


#: Phone searches and the leads of `searchable` they find (tests/integration runs them on PostgreSQL).
PHONE_SEARCHES = [
    # A national number typed as it is dialled, with or without the trunk 0, or in E.164.
    ("98765", {"anjali"}),
    ("098765", {"anjali"}),
    ("+9198765", {"anjali"}),
    ("9198765", {"anjali"}),
    ("0091 98765", {"anjali"}),
    ("+91 98765-43210", {"anjali"}),
    ("(98765) 43", {"anjali"}),
    ("98", {"anjali", "rahul"}),
    ("87650", {"meera"}),
    ("+91", {"anjali", "rahul", "meera"}),
    ("447700", {"uk"}),
    ("+44 7700 900123", {"uk"}),
    ("43210", set()),  # the end of a number is not its start
    ("+98765", set()),  # + means a country code follows
]


@pytest.mark.parametrize(("q", "names"), PHONE_SEARCHES)
def test_a_phone_search_finds_numbers_that_start_with_it(client, telecaller, searchable, q, names):
    assert found(client, telecaller, q) == {searchable[name].id for name in names}


#: Name searches and the leads of `searchable` they find.
NAME_SEARCHES = [
    ("anj", {"anjali"}),
    ("ANJALI", {"anjali"}),
    ("men", {"anjali", "uk"}),  # Menon, Menezes: the start of any word
    ("menon", {"anjali"}),
    ("anjali men", {"anjali"}),  # every word must match
    ("men anjali", {"anjali"}),
    ("nair", {"rahul"}),
    ("k", {"rahul"}),
    ("pillai", {"meera"}),  # after a hyphen
    ("anand", {"meera"}),
    ("jali", set()),  # inside a word is not a start
    ("anjali nair", set()),
    ("%", set()),  # no word at all: nothing, not everything
    ("_", set()),
]


@pytest.mark.parametrize(("q", "names"), NAME_SEARCHES)
def test_a_name_search_finds_names_with_words_that_start_so(client, telecaller, searchable, q, names):
    assert found(client, telecaller, q) == {searchable[name].id for name in names}


def test_an_empty_search_is_no_search(client, telecaller, searchable):
    assert found(client, telecaller, "") == {lead.id for lead in searchable.values()}


def test_a_search_never_reaches_past_what_the_caller_sees(client, branch, telecaller, other_branch):
    colleague = make_user(branch)
    lead_with(branch, colleague, phone="+919876500001", name="Anjali Colleague")
    lead_with(other_branch, make_user(other_branch), phone="+919876500002", name="Anjali Elsewhere")
    mine = lead_with(branch, telecaller, phone="+919876500003", name="Anjali Mine")
    other_admin = make_user(other_branch, Role.ADMIN)

    assert found(client, telecaller, "anjali") == {mine.id}
    assert found(client, telecaller, "98765") == {mine.id}
    assert len(found(client, other_admin, "anjali")) == 1  # their own branch's only


def test_search_and_filters_page_together(client, branch, telecaller):
    matching = [
        lead_with(branch, telecaller, phone=f"+91990000000{n}", name=f"Asha {n}").id for n in range(5)
    ]
    lead_with(branch, telecaller, phone="+919100000000", name="Other")
    headers = bearer(telecaller)

    pages, url = [], "/api/leads?q=asha&status=new&limit=2"
    while url:
        body = client.get(url, headers=headers).get_json()
        pages.append([item["id"] for item in body["items"]])
        url = f"/api/leads?q=asha&status=new&limit=2&cursor={body['next']}" if body["next"] else None

    assert [len(page) for page in pages] == [2, 2, 1]
    assert list(itertools.chain(*pages)) == matching


def test_a_search_over_100_characters_is_422(client, telecaller):
    response = client.get("/api/leads", query_string={"q": "a" * 101}, headers=bearer(telecaller))

    assert response.status_code == 422
    assert "q" in response.get_json()["error"]["fields"]


# -- one lead, and its update ----------------------------------------------------------------------------


def patch(client, user, lead_id: int, **body):
    return client.patch(f"/api/leads/{lead_id}", json=body, headers=bearer(user))


def test_a_lead_is_read_by_its_telecaller_and_the_branch_admin_only(
    client, branch, telecaller, admin, other_branch
):
    lead = make_lead(branch, telecaller, name="Asha")

    assert (
        client.get(f"/api/leads/{lead.id}", headers=bearer(telecaller)).get_json()["student_name"] == "Asha"
    )
    assert client.get(f"/api/leads/{lead.id}", headers=bearer(admin)).status_code == 200
    assert client.get(f"/api/leads/{lead.id}", headers=bearer(make_user(branch))).status_code == 403
    other_admin = make_user(other_branch, Role.ADMIN)
    assert client.get(f"/api/leads/{lead.id}", headers=bearer(other_admin)).status_code == 403
    assert client.get("/api/leads/999999", headers=bearer(admin)).status_code == 404
    assert client.get(f"/api/leads/{lead.id}").status_code == 401


def test_the_telecaller_sets_the_status_of_their_lead(client, branch, telecaller):
    lead = make_lead(branch, telecaller)

    response = patch(client, telecaller, lead.id, status="interested")

    assert response.status_code == 200
    assert response.get_json()["status"] == "interested"
    db.session.expire_all()
    assert db.session.get(Lead, lead.id).status is LeadStatus.INTERESTED
    assert (
        client.get(f"/api/leads/{lead.id}", headers=bearer(telecaller)).get_json()["status"] == "interested"
    )


@pytest.mark.parametrize("status", [s.value for s in LeadStatus])
def test_every_status_can_be_set(client, branch, telecaller, status):
    lead = make_lead(branch, telecaller)

    assert patch(client, telecaller, lead.id, status=status).get_json()["status"] == status


def test_an_admin_of_the_branch_sets_a_status(client, branch, telecaller, admin):
    lead = make_lead(branch, telecaller)

    assert patch(client, admin, lead.id, status="enrolled").get_json()["status"] == "enrolled"


def test_nobody_else_changes_a_lead(client, branch, telecaller, other_branch):
    lead = make_lead(branch, telecaller)

    assert patch(client, make_user(branch), lead.id, status="lost").status_code == 403
    assert patch(client, make_user(other_branch, Role.ADMIN), lead.id, status="lost").status_code == 403
    db.session.expire_all()
    assert db.session.get(Lead, lead.id).status is LeadStatus.NEW


def test_an_admin_reassigns_a_lead_to_an_active_telecaller_of_the_branch(client, branch, admin, callers):
    lead = make_lead(branch, callers[0])

    response = patch(client, admin, lead.id, telecaller_id=callers[1].id)

    assert response.status_code == 200
    assert response.get_json()["telecaller_id"] == callers[1].id
    db.session.expire_all()
    assert db.session.get(Lead, lead.id).assigned_at is not None
    # The lead moved: the new telecaller sees it, the old one no longer does.
    assert ids(client.get("/api/leads", headers=bearer(callers[1]))) == [lead.id]
    assert ids(client.get("/api/leads", headers=bearer(callers[0]))) == []
    assert client.get(f"/api/leads/{lead.id}", headers=bearer(callers[0])).status_code == 403


def test_an_admin_sets_status_and_telecaller_at_once(client, branch, admin, callers):
    lead = make_lead(branch, callers[0])

    body = patch(client, admin, lead.id, telecaller_id=callers[2].id, status="contacted").get_json()

    assert (body["telecaller_id"], body["status"]) == (callers[2].id, "contacted")


def test_a_lead_goes_only_to_an_active_telecaller_of_its_branch(client, branch, admin, callers, other_branch):
    lead = make_lead(branch, callers[0])
    idle = make_user(branch, active=False)
    for telecaller_id in (idle.id, admin.id, make_user(other_branch).id, 999_999):
        response = patch(client, admin, lead.id, telecaller_id=telecaller_id)

        assert response.status_code == 422, telecaller_id
        assert "telecaller_id" in response.get_json()["error"]["fields"]
    db.session.expire_all()
    assert db.session.get(Lead, lead.id).telecaller_id == callers[0].id


def test_a_telecaller_cannot_reassign_even_to_themselves(client, branch, callers):
    lead = make_lead(branch, callers[0])

    for telecaller_id in (callers[1].id, callers[0].id):
        response = patch(client, callers[0], lead.id, telecaller_id=telecaller_id, status="lost")
        assert response.status_code == 403
    db.session.expire_all()
    stored = db.session.get(Lead, lead.id)
    assert (stored.telecaller_id, stored.status) == (callers[0].id, LeadStatus.NEW)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"status": "maybe"}, "status"),
        ({"status": "lost", "student_name": "X"}, "student_name"),  # not a field one may change
        ({"stauts": "lost"}, "stauts"),
        ({"telecaller_id": "2"}, "telecaller_id"),
    ],
)
def test_a_bad_update_is_422_and_changes_nothing(client, branch, telecaller, body, field):
    lead = make_lead(branch, telecaller)

    response = client.patch(f"/api/leads/{lead.id}", json=body, headers=bearer(telecaller))

    assert response.status_code == 422
    assert field in response.get_json()["error"]["fields"]
    db.session.expire_all()
    assert db.session.get(Lead, lead.id).status is LeadStatus.NEW


def test_an_empty_update_changes_nothing(client, branch, telecaller):
    lead = make_lead(branch, telecaller)

    response = patch(client, telecaller, lead.id)

    assert response.status_code == 200
    assert (response.get_json()["status"], response.get_json()["telecaller_id"]) == ("new", telecaller.id)


@pytest.mark.parametrize("lead_id", ["2147483648", "99999999999", "007", "0"])
def test_an_id_outside_the_ids_is_404_for_every_method(client, admin, lead_id):
    headers = bearer(admin)

    assert client.get(f"/api/leads/{lead_id}", headers=headers).status_code == 404
    assert client.patch(f"/api/leads/{lead_id}", json={"status": "lost"}, headers=headers).status_code == 404
