"""The API on PostgreSQL, where it differs from SQLite: integer columns that refuse bigger numbers in a
comparison, and row locks rather than a single writer."""

from __future__ import annotations

import threading

from werkzeug.serving import make_server

from edcrm.extensions import db
from edcrm.models import Branch, Role
from tests.support.leads import make_lead
from tests.support.people import bearer, make_user
from tests.support.recordings import make_call_log, race_the_limit


def test_ids_beyond_the_integer_columns_are_404_on_postgresql(pg_app):
    """PostgreSQL refuses to compare an INTEGER id with a bigger number: that must not be a 500."""
    with pg_app.app_context():
        branch = Branch(name="Kochi")
        db.session.add(branch)
        db.session.commit()
        telecaller = make_user(branch)
        lead = make_lead(branch, telecaller)
        headers = bearer(telecaller)
        client = pg_app.test_client()

        body = {"lead_id": 2**31, "outcome": "busy", "duration_seconds": 1}
        assert client.post("/api/call-logs", json=body, headers=headers).status_code == 422
        assert client.get(f"/api/call-logs/{2**31}", headers=headers).status_code == 404
        assert (
            client.get("/api/leads?cursor=eyJhZnRlciI6MTA5OTUxMTYyNzc3Nn0", headers=headers).status_code
            == 422
        )

        body = {"lead_id": lead.id, "outcome": "invalid_number", "duration_seconds": 86_400}
        created = client.post("/api/call-logs", json=body, headers=headers)
        assert created.status_code == 201
        assert client.get(f"/api/call-logs/{created.get_json()['id']}", headers=headers).status_code == 200


def test_concurrent_chunks_cannot_pass_the_recording_limit_together_on_postgresql(pg_app):
    """The same race where the upload's row lock, not SQLite's single writer, keeps the total."""
    with pg_app.app_context():
        branch = Branch(name="Kochi")
        db.session.add(branch)
        db.session.commit()
        telecaller = make_user(branch, Role.TELECALLER)
        auth, call_log_id = bearer(telecaller), make_call_log(branch, telecaller).id
        server = make_server("127.0.0.1", 0, pg_app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            race_the_limit(pg_app, auth, call_log_id, f"http://127.0.0.1:{server.server_port}")
        finally:
            server.shutdown()
            thread.join()
            server.server_close()
