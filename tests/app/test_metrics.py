"""GET /metrics: who may scrape it, and that its figures move with what the app does.

The process's counters live as long as the test session, so tests compare them before and after;
the database's figures (jobs, imports) belong to each test's own database and are read as they are.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys

import dramatiq
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edcrm import create_app
from edcrm.config import ConfigError, from_env
from edcrm.extensions import db
from edcrm.jobs import ledger, records
from edcrm.jobs.prometheus import WorkerPrometheus, remove_stale_files
from edcrm.models import CallLog, CallOutcome, Job, JobState, Lead, Role
from tests.support.people import bearer, make_user

METRICS_TOKEN = "prometheus-scrapes-with-this-token"
CSV = (
    b"name,phone,email\n"
    b"Asha Nair,9847012301,asha@example.com\n"
    b"Rahul Menon,9847012302,\n"
    b"Fathima K,9847012303,\n"
    b"Nobody,12345,not-an-email\n"  # invalid
    b"Rahul Again,9847012302,\n"  # a duplicate of row 3's phone
)


@pytest.fixture(autouse=True)
def metrics_token(app):
    app.config["METRICS_TOKEN"] = METRICS_TOKEN


@pytest.fixture
def context(app):
    with app.app_context():
        yield


PROMETHEUS = {"Authorization": f"Bearer {METRICS_TOKEN}"}


def scrape(client) -> dict[tuple[str, frozenset], float]:
    """{(sample name, its labels): value} of one scrape, as Prometheus would parse it."""
    response = client.get("/metrics", headers=PROMETHEUS)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.content_type == "text/plain; version=0.0.4; charset=utf-8"
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.get_data(as_text=True))
        for sample in family.samples
    }


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


# -- who may scrape ------------------------------------------------------------------------------------------


def test_metrics_need_the_metrics_token(client, admin, telecaller):
    anonymous = client.get("/metrics")
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"] == 'Bearer realm="edcrm"'
    assert anonymous.get_json()["error"]["code"] == "unauthorized"

    wrong = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}x"})
    assert wrong.status_code == 401
    assert set(wrong.get_json()["error"]) >= {"code", "message"}
    assert client.get("/metrics", headers={"Authorization": METRICS_TOKEN}).status_code == 401  # no scheme

    # The series are the whole deployment's, every branch's: no user's token opens them, an admin's neither.
    for user in (telecaller, admin):
        forbidden = client.get("/metrics", headers=bearer(user))
        assert forbidden.status_code == 403
        assert forbidden.get_json()["error"]["code"] == "forbidden"
        assert b"edcrm_jobs" not in forbidden.data

    scraped = client.get("/metrics", headers=PROMETHEUS)
    assert scraped.status_code == 200
    assert b"edcrm_http_requests_total" in scraped.data


def test_another_branchs_admin_sees_no_series_of_this_branch(app, client, branch, other_branch, stub_broker):
    with app.app_context():
        db.session.add(
            Job(
                id="a-retrying-job",
                queue="csv_import",
                actor="import_leads",
                state=JobState.RETRYING,
                branch_id=branch.id,
            )
        )
        db.session.commit()
    outsider = make_user(other_branch, Role.ADMIN, email="admin@thrissur.test")

    response = client.get("/metrics", headers=bearer(outsider))

    assert response.status_code == 403
    assert b"retrying" not in response.data
    assert value(scrape(client), "edcrm_jobs", queue="csv_import", state="retrying") == 1  # the operators'


def test_without_a_metrics_token_metrics_are_closed(app, client, admin):
    app.config["METRICS_TOKEN"] = None
    assert client.get("/metrics", headers=PROMETHEUS).status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer "}).status_code == 401
    closed = client.get("/metrics")
    assert closed.status_code == 401
    assert "METRICS_TOKEN is not set" in closed.get_json()["error"]["message"]
    assert client.get("/metrics", headers=bearer(admin)).status_code == 403


def test_metrics_token_comes_from_the_environment(tmp_path):
    assert from_env({}, tmp_path, {"SECRET_KEY": "x"})["METRICS_TOKEN"] is None
    config = from_env({"METRICS_TOKEN": f" {METRICS_TOKEN}\n"}, tmp_path, {"SECRET_KEY": "x"})
    assert config["METRICS_TOKEN"] == METRICS_TOKEN
    with pytest.raises(ConfigError, match="METRICS_TOKEN must be at least 16"):
        from_env({"METRICS_TOKEN": "short"}, tmp_path, {"SECRET_KEY": "x"})


# -- requests ------------------------------------------------------------------------------------------------


def test_requests_are_counted_by_endpoint_and_status_not_by_path(client, telecaller):
    before = scrape(client)
    headers = bearer(telecaller)
    for _ in range(3):
        assert client.get("/healthz").status_code == 200
    # Two unknown call logs and two unknown paths: two series, whatever the ids and paths were.
    assert client.get("/api/call-logs/998", headers=headers).status_code == 404
    assert client.get("/api/call-logs/999", headers=headers).status_code == 404
    client.get("/no/such/page")
    client.get("/api/nothing-here/12")
    client.open("/healthz", method="BREW")  # a method no one routes

    after = scrape(client)

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("edcrm_http_requests_total", method="GET", endpoint="health.healthz", status="200") == 3
    assert moved("edcrm_http_request_duration_seconds_count", method="GET", endpoint="health.healthz") == 3
    assert moved("edcrm_http_requests_total", method="GET", endpoint="api.get_call_log", status="404") == 2
    assert moved("edcrm_http_requests_total", method="GET", endpoint="unmatched", status="404") == 2
    assert moved("edcrm_http_requests_total", method="other", endpoint="unmatched", status="405") == 1
    paths = [labels for name, labels in after if name == "edcrm_http_requests_total"]
    assert not any("999" in dict(labels)["endpoint"] for labels in paths)


# -- uploads -------------------------------------------------------------------------------------------------


def test_a_csv_upload_counts_its_bytes(app, client, admin, branch, stub_broker):
    caller = make_user(branch, Role.TELECALLER)
    before = value(scrape(client), "edcrm_upload_bytes_total", kind="csv")

    response = client.post(
        "/api/imports",
        data={"file": (io.BytesIO(CSV), "leads.csv"), "telecaller_ids": [str(caller.id)]},
        headers=bearer(admin),
        content_type="multipart/form-data",
    )
    assert response.status_code == 202, response.get_json()
    app.config["MAX_CSV_BYTES"] = len(CSV)
    refused = client.post(  # too large: refused as it streams, nothing stored, nothing counted
        "/api/imports",
        data={"file": (io.BytesIO(CSV + CSV), "x.csv"), "telecaller_ids": [str(caller.id)]},
        headers=bearer(admin),
        content_type="multipart/form-data",
    )
    assert refused.status_code == 413

    assert value(scrape(client), "edcrm_upload_bytes_total", kind="csv") - before == len(CSV)


@pytest.fixture
def call_log(branch, telecaller):
    lead = Lead(
        branch_id=branch.id, telecaller_id=telecaller.id, student_name="S", phone_number="+919800000001"
    )
    call_log = CallLog(lead=lead, telecaller_id=telecaller.id, outcome=CallOutcome.CONNECTED)
    db.session.add(call_log)
    db.session.commit()
    return call_log


def test_recording_chunks_and_one_shot_recordings_count_their_bytes(
    client, telecaller, call_log, stub_broker
):
    headers = bearer(telecaller)
    before = scrape(client)
    chunk = os.urandom(3000)
    session = {"call_log_id": call_log.id, "filename": "call.wav", "expected_chunks": 2}
    upload_id = client.post("/api/recordings/uploads", json=session, headers=headers).get_json()["upload_id"]
    url = f"/api/recordings/uploads/{upload_id}/chunks/0"
    checked = headers | {"X-Chunk-SHA256": hashlib.sha256(chunk).hexdigest()}
    assert client.put(url, data=chunk, headers=checked).status_code == 200
    mismatch = headers | {"X-Chunk-SHA256": "0" * 64}
    assert client.put(url, data=chunk, headers=mismatch).status_code == 422  # refused: not counted

    recording = os.urandom(5000)
    one_shot = client.post(
        f"/api/call-logs/{call_log.id}/recording",
        data={"file": (io.BytesIO(recording), "call.wav")},
        headers=headers,
        content_type="multipart/form-data",
    )
    assert one_shot.status_code == 202, one_shot.get_json()

    after = scrape(client)
    for kind, size in (("recording_chunk", len(chunk)), ("recording", len(recording)), ("csv", 0)):
        assert (
            value(after, "edcrm_upload_bytes_total", kind=kind)
            - value(before, "edcrm_upload_bytes_total", kind=kind)
            == size
        ), kind


# -- what the database knows -------------------------------------------------------------------------------


def test_job_gauges_show_the_ledger_by_queue_and_state(context, client, stub_broker, request):
    from edcrm.actors.maintenance import ping

    for state in (JobState.FAILED, JobState.FAILED, JobState.CANCELLED):
        job = Job(id=os.urandom(8).hex(), actor="import_leads", queue="csv_import", state=state)
        db.session.add(job)
    db.session.commit()
    ping.send()
    ping.send()
    samples = scrape(client)
    assert value(samples, "edcrm_metrics_database_up") == 1
    assert value(samples, "edcrm_jobs", queue="default", state="enqueued") == 2
    assert value(samples, "edcrm_jobs", queue="csv_import", state="failed") == 2
    assert value(samples, "edcrm_jobs", queue="csv_import", state="cancelled") == 1
    # Every queue and state has its series, at 0 when no job is in it.
    assert samples[("edcrm_jobs", frozenset({"queue": "recordings", "state": "running"}.items()))] == 0

    request.getfixturevalue("stub_worker")
    stub_broker.join("default", fail_fast=True)
    samples = scrape(client)
    assert value(samples, "edcrm_jobs", queue="default", state="enqueued") == 0
    assert value(samples, "edcrm_jobs", queue="default", state="succeeded") == 2


def test_import_row_totals_follow_a_finished_import(client, admin, branch, stub_broker, stub_worker):
    caller = make_user(branch, Role.TELECALLER)
    response = client.post(
        "/api/imports",
        data={"file": (io.BytesIO(CSV), "leads.csv"), "telecaller_ids": [str(caller.id)]},
        headers=bearer(admin),
        content_type="multipart/form-data",
    )
    assert response.status_code == 202
    stub_broker.join("csv_import", fail_fast=True)
    stub_worker.join()

    samples = scrape(client)
    assert value(samples, "edcrm_lead_imports", status="completed") == 1
    assert value(samples, "edcrm_import_rows_total", outcome="imported") == 3
    assert value(samples, "edcrm_import_rows_total", outcome="invalid") == 1
    assert value(samples, "edcrm_import_rows_total", outcome="duplicate") == 1


def test_a_database_that_does_not_answer_leaves_the_rest_of_the_scrape(app, client):
    with app.app_context():
        db.drop_all()
    samples = scrape(client)
    assert value(samples, "edcrm_metrics_database_up") == 0
    assert not any(name == "edcrm_jobs" for name, _ in samples)
    assert any(name == "edcrm_http_requests_total" for name, _ in samples)


def test_each_app_scrapes_on_its_own(tmp_path, monkeypatch):
    """Tests and tools make many apps in one process: none may meet "Duplicated timeseries"."""
    for n in range(3):
        monkeypatch.setenv("EDCRM_INSTANCE_PATH", str(tmp_path / f"instance{n}"))
        app = create_app(
            {
                "SECRET_KEY": "x",
                "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / f'{n}.sqlite3'}",
                "METRICS_TOKEN": METRICS_TOKEN,
            }
        )
        with app.app_context():
            db.create_all()
            assert value(scrape(app.test_client()), "edcrm_metrics_database_up") == 1
            db.session.remove()
            db.engine.dispose()
        records.dispose_engine(app)


# -- the embedded mode's workers ---------------------------------------------------------------------------


def test_the_embedded_workers_job_metrics_count_what_ran(context, client, stub_broker, request):
    from edcrm.actors.maintenance import ping

    labels = {"queue_name": "default", "actor_name": "ping"}
    before = scrape(client)
    cancelled = ping.send()
    ledger.cancel(cancelled.message_id)  # skipped by the ledger before it starts: not counted
    ping.send()
    ping.send(fail=True)  # 1 + 3 retries, each an error
    worker = request.getfixturevalue("stub_worker")
    stub_broker.join("default", fail_fast=False)
    worker.join()

    after = scrape(client)

    def moved(name):
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("dramatiq_messages_total") == 1 + 4
    assert moved("dramatiq_message_errors_total") == 4
    assert moved("dramatiq_message_retries_total") == 3
    assert moved("dramatiq_message_rejects_total") == 1  # the failed one, dead-lettered
    assert moved("dramatiq_message_duration_milliseconds_count") == 5
    assert value(after, "dramatiq_messages_inprogress", **labels) == 0


# -- the Redis workers' middleware, outside of a worker ----------------------------------------------------


def test_the_worker_middleware_does_nothing_where_no_worker_booted():
    """The web, the CLI and the scheduler build the Redis broker to send: its Prometheus middleware must
    neither fail there nor take over the process's metrics."""
    middleware = WorkerPrometheus()
    message = dramatiq.Message("default", "ping", (), {}, {"retries": 2})
    middleware.after_enqueue(None, message, None)  # a re-sent job carries "retries"
    middleware.before_process_message(None, message)
    middleware.after_process_message(None, message)
    middleware.after_skip_message(None, message)
    middleware.after_nack(None, message)
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ


def test_stale_metric_files_of_stopped_workers_are_removed(tmp_path):
    tmp_path = tmp_path / "prometheus"
    tmp_path.mkdir()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    dead = int(gone.stdout)
    live = os.getppid()
    for name in (
        f"counter_{dead}.db",
        f"histogram_{dead}.db",
        f"counter_{live}.db",
        f"counter_{os.getpid()}.db",
    ):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not ours")

    assert remove_stale_files(tmp_path) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"counter_{live}.db", "notes.txt"]
