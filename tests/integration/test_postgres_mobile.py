"""The mobile API on PostgreSQL, where it differs from SQLite: lead search through full-text and
pattern indexes, and concurrent requests with the same Idempotency-Key, which SQLite's single writer
never lets happen at once."""

from __future__ import annotations

import threading

import pytest
import requests
import sqlalchemy as sa
from werkzeug.serving import make_server

from edcrm.extensions import db
from edcrm.models import Branch, CallLog, IdempotencyKey, Lead
from tests.routes.api.test_leads import NAME_SEARCHES, PHONE_SEARCHES, make_searchable
from tests.support.leads import make_lead
from tests.support.people import bearer, make_user


@pytest.fixture
def pg(pg_app):
    with pg_app.app_context():
        branch = Branch(name="Kochi")
        db.session.add(branch)
        db.session.commit()
        yield pg_app, branch


@pytest.fixture
def live(pg):
    """The app served over HTTP by a threaded server: requests run at once, each in its own session."""
    app, _branch = pg
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def test_the_searches_find_the_same_leads_on_postgresql(pg):
    app, branch = pg
    telecaller = make_user(branch)
    leads = make_searchable(branch, telecaller)
    headers = bearer(telecaller)
    client = app.test_client()

    for q, names in [*PHONE_SEARCHES, *NAME_SEARCHES]:
        response = client.get("/api/leads", query_string={"q": q}, headers=headers)
        assert response.status_code == 200, (q, response.get_json())
        assert {item["id"] for item in response.get_json()["items"]} == {leads[n].id for n in names}, q


@pytest.mark.parametrize(
    ("q", "index"), [("98765", "ix_leads_branch_id_phone_prefix"), ("anj men", "ix_leads_name_words")]
)
def test_an_admins_search_uses_its_index(pg, q, index):
    """In a branch of 20,000 leads the planner answers a search from the index made for it: the queries
    are the indexes' own expressions."""
    from edcrm.routes.api.leads import search

    _app, branch = pg
    db.session.execute(
        sa.text(
            "INSERT INTO leads (branch_id, student_name, phone_number, status, created_at) "
            "SELECT :branch, 'Student ' || g, '+91' || (7000000000 + g), 'new', now() "
            "FROM generate_series(1, 20000) AS g"
        ),
        {"branch": branch.id},
    )
    db.session.commit()
    db.session.execute(sa.text("ANALYZE leads"))
    stmt = sa.select(Lead.id).where(Lead.branch_id == branch.id, search(q))
    compiled = stmt.compile(db.engine, compile_kwargs={"literal_binds": True})
    plan = "\n".join(db.session.execute(sa.text(f"EXPLAIN {compiled}")).scalars())
    db.session.rollback()

    assert index in plan, plan


def test_concurrent_requests_with_one_key_log_one_call(pg, live):
    _app, branch = pg
    telecaller = make_user(branch)
    lead = make_lead(branch, telecaller)
    headers = {**bearer(telecaller), "Idempotency-Key": "8d3e5a52-retry"}
    body = {"lead_id": lead.id, "outcome": "connected", "duration_seconds": 61, "notes": "call back"}
    barrier = threading.Barrier(8)
    answers: list[tuple[int, dict]] = []

    def send() -> None:
        barrier.wait()
        response = requests.post(f"{live}/api/call-logs", json=body, headers=headers, timeout=30)
        answers.append((response.status_code, response.json()))

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert [status for status, _ in answers] == [201] * 8
    assert all(answer == answers[0][1] for _, answer in answers)
    db.session.expire_all()
    assert db.session.execute(sa.select(sa.func.count()).select_from(CallLog)).scalar() == 1
    assert db.session.execute(sa.select(sa.func.count()).select_from(IdempotencyKey)).scalar() == 1
    assert db.session.execute(sa.select(CallLog.notes)).scalar() == "call back"


def test_concurrent_requests_with_one_key_and_other_bodies_log_one_call(pg, live):
    _app, branch = pg
    telecaller = make_user(branch)
    lead_id = make_lead(branch, telecaller).id
    headers = {**bearer(telecaller), "Idempotency-Key": "same-key"}
    barrier = threading.Barrier(6)
    statuses: list[int] = []

    def send(seconds: int) -> None:
        barrier.wait()
        body = {"lead_id": lead_id, "outcome": "busy", "duration_seconds": seconds}
        statuses.append(
            requests.post(f"{live}/api/call-logs", json=body, headers=headers, timeout=30).status_code
        )

    threads = [threading.Thread(target=send, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(statuses) == [201] + [422] * 5
    db.session.expire_all()
    assert db.session.execute(sa.select(sa.func.count()).select_from(CallLog)).scalar() == 1


def test_notes_with_a_nul_are_422_not_a_database_error(pg):
    app, branch = pg
    telecaller = make_user(branch)
    lead = make_lead(branch, telecaller)
    body = {"lead_id": lead.id, "outcome": "busy", "duration_seconds": 1, "notes": "a\x00b"}

    response = app.test_client().post("/api/call-logs", json=body, headers=bearer(telecaller))

    assert response.status_code == 422
    assert "notes" in response.get_json()["error"]["fields"]
