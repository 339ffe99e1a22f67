"""Outages of each dependency, on the production processes: gunicorn and a `dramatiq edcrm.actors` worker on
PostgreSQL, a Redis of this module's own and moto's S3 server over HTTP.

For each of S3, PostgreSQL and Redis, during uploads and imports: while it is down every request that
needs it is a clear 503 naming it, with Retry-After, on the API and as a page in the site's layout, and
changes nothing; a job that was under way or queued when it went down finishes once it is back, and the
request refused meanwhile succeeds when sent again.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from tests.support.audio_samples import wav
from tests.support.processes import (
    REPO,
    Service,
    free_port,
    fresh_postgres_database,
    http_get,
    job_row,
    run_flask,
    service_env,
    start_dramatiq,
    start_gunicorn,
    wait_for,
)
from tests.support.s3_server import AWS_ENV

#: argv[2] call logs of the telecaller whose id is argv[1], each on a new lead; prints their ids.
MAKE_CALL_LOGS = """
import sys
from edcrm import create_app
from edcrm.extensions import db
from edcrm.models import CallLog, CallOutcome, Lead, User
app = create_app()
with app.app_context():
    telecaller = db.session.get(User, int(sys.argv[1]))
    made = []
    for n in range(int(sys.argv[2])):
        lead = Lead(branch_id=telecaller.branch_id, telecaller_id=telecaller.id, student_name="Caller",
                    phone_number=f"+9197000{n:05d}")
        made.append(CallLog(lead=lead, telecaller_id=telecaller.id, outcome=CallOutcome.CONNECTED))
    db.session.add_all(made)
    db.session.commit()
    print(" ".join(str(call_log.id) for call_log in made))
"""


def make_call_logs(env: dict[str, str], telecaller_id: int, count: int) -> list[int]:
    argv = [sys.executable, "-c", MAKE_CALL_LOGS, str(telecaller_id), str(count)]
    made = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, check=True)
    return [int(word) for word in made.stdout.split()]


REDIS_SERVER = shutil.which("redis-server")


class PrivateRedis:
    """A redis-server of this module's own on a free port, never the shared one: stopping it is an outage
    of this test's broker only. Its queues are kept on disk (append-only file), as a production Redis
    keeps them across a restart, so a job queued before the outage is still there after it."""

    def __init__(self, folder: Path):
        self.port, self.folder = free_port(), folder
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.service: Service | None = None
        folder.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        argv = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.folder)]
        self.service = Service(argv, env={}, log_path=self.folder / "redis.log", name="redis-server")
        wait_for(self._answers, timeout=10, what="redis-server", watch=self.service)

    def _answers(self) -> bool:
        import redis

        try:
            return redis.Redis.from_url(self.url, socket_timeout=1).ping()
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop()  # SIGTERM: redis writes its file and exits
            self.service = None

    @contextlib.contextmanager
    def stopped(self):
        self.stop()
        try:
            yield
        finally:
            self.start()


@dataclass
class Stack:
    base: str
    env: dict[str, str]
    tmp: Path
    engine: sa.Engine  # on the stack's database
    pg_admin: sa.Engine  # on another database of the same server, to take the stack's down
    database: str
    redis: PrivateRedis
    s3: object  # tests/support/s3_server.MotoS3Server
    bucket: str
    admin: dict
    telecaller: dict
    telecaller_ids: list[int]
    web: Service
    worker: Service

    def api(self, method: str, path: str, who: dict | None = None, **kwargs) -> requests.Response:
        headers = {
            "Authorization": f"Bearer {(who or self.telecaller)['token']}",
            **kwargs.pop("headers", {}),
        }
        return requests.request(method, f"{self.base}{path}", headers=headers, timeout=60, **kwargs)

    call_logs: list[int]  # of the telecaller's, made beforehand (a process each would take seconds)

    def call_log(self) -> int:
        return self.call_logs.pop()

    def count(self, table: str, where: str = "true") -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.text(f"SELECT count(*) FROM {table} WHERE {where}")).scalar()

    def bucket_keys(self, prefix: str = "") -> list[str]:
        listed = self.s3.client().list_objects_v2(Bucket=self.bucket, Prefix=f"edcrm/{prefix}")
        return sorted(item["Key"] for item in listed.get("Contents", []))

    def restart_worker(self) -> None:
        self.worker.stop()
        self.worker = start_dramatiq(self.env, self.tmp / "dramatiq.log", processes=1, threads=2)

    @contextlib.contextmanager
    def database_down(self):
        """The stack's database refuses new connections and its open ones are killed; then it is back."""
        name = self.database
        with self.pg_admin.connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            conn.execute(
                sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name"),
                {"name": name},
            )
        self.engine.dispose()
        try:
            yield
        finally:
            with self.pg_admin.connect() as conn:
                conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))


@pytest.fixture(scope="module")
def stack(postgres_url, s3_server, tmp_path_factory) -> Iterator[Stack]:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed: the Redis outage needs a private one")
    tmp = tmp_path_factory.mktemp("outages")
    redis_server = PrivateRedis(tmp / "redis")
    redis_server.start()
    bucket = s3_server.create_bucket()
    pg_admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    try:
        with fresh_postgres_database(postgres_url) as database_url:
            port = free_port()
            env = service_env(
                DATABASE_URL=database_url,
                REDIS_URL=redis_server.url,
                STORAGE_URL=f"s3://{bucket}/edcrm",
                S3_ENDPOINT_URL=s3_server.endpoint_url,
                EDCRM_INSTANCE_PATH=tmp / "instance",
                PORT=port,
                HOST="127.0.0.1",
                SECRET_KEY="outages",
                WEB_CONCURRENCY=1,
                JOB_MIN_BACKOFF_MS="1000",
                JOB_MAX_BACKOFF_MS="2000",
                TMPDIR=tmp,
                **AWS_ENV,
            )
            run_flask("db", "upgrade", env=env)
            demo = json.loads(run_flask("edcrm", "seed-demo", "--json", env=env).stdout)
            engine = sa.create_engine(database_url, pool_pre_ping=True)
            web = start_gunicorn(env, tmp / "gunicorn.log")
            worker = start_dramatiq(env, tmp / "dramatiq.log", processes=1, threads=2)
            base = f"http://127.0.0.1:{port}"
            stack = Stack(
                base=base,
                env=env,
                tmp=tmp,
                engine=engine,
                pg_admin=pg_admin,
                database=sa.make_url(database_url).database,
                redis=redis_server,
                s3=s3_server,
                bucket=bucket,
                admin=demo["admin"],
                telecaller=demo["telecallers"][0],
                telecaller_ids=[user["id"] for user in demo["telecallers"]],
                call_logs=make_call_logs(env, demo["telecallers"][0]["id"], 12),
                web=web,
                worker=worker,
            )
            try:
                wait_for(lambda: http_get(f"{base}/healthz"), timeout=60, what="gunicorn", watch=web)
                yield stack
            finally:
                stack.worker.stop()
                web.stop()
                engine.dispose()
    finally:
        pg_admin.dispose()
        redis_server.stop()


# -- helpers ------------------------------------------------------------------------------------------------


def assert_unavailable(response: requests.Response, code: str) -> None:
    """A clear 503: the code naming the dependency, Retry-After, no internals."""
    assert response.status_code == 503, f"{response.status_code}: {response.text[:500]}"
    assert int(response.headers["Retry-After"]) > 0
    error = response.json()["error"]
    assert error["code"] == code, error
    assert "127.0.0.1" not in response.text and "Traceback" not in response.text


def assert_unavailable_page(response: requests.Response, title: str, *, navigation: bool) -> None:
    assert response.status_code == 503, f"{response.status_code}: {response.text[:500]}"
    assert int(response.headers["Retry-After"]) > 0
    assert response.headers["Content-Type"].startswith("text/html")
    page = response.text
    assert title in page and 'class="brand"' in page  # the site's layout, not a bare error page
    if navigation:
        assert 'href="/imports"' in page and "Sign out" in page
    assert "127.0.0.1" not in page and "Traceback" not in page


def csrf_token(page: str) -> str:
    return re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)


def signed_in(stack: Stack, who: dict) -> requests.Session:
    """A browser's session (cookie) of who's."""
    session = requests.Session()
    form = session.get(f"{stack.base}/login", timeout=30)
    data = {"email": who["email"], "password": who["password"], "csrf_token": csrf_token(form.text)}
    answer = session.post(f"{stack.base}/login", data=data, allow_redirects=False, timeout=30)
    assert answer.status_code == 302, answer.text[:500]
    return session


def import_form(stack: Stack, session: requests.Session, csv: bytes) -> requests.Response:
    """The import page's form, filled and sent."""
    token = csrf_token(session.get(f"{stack.base}/imports/new", timeout=30).text)
    data = {"csrf_token": token, "telecaller_ids": [str(stack.telecaller_ids[0])]}
    files = {"file": ("leads.csv", io.BytesIO(csv), "text/csv")}
    return session.post(
        f"{stack.base}/imports/new", data=data, files=files, allow_redirects=False, timeout=60
    )


def post_import(stack: Stack, csv: bytes) -> requests.Response:
    files = {"file": ("leads.csv", io.BytesIO(csv), "text/csv")}
    data = {"telecaller_ids": ",".join(map(str, stack.telecaller_ids))}
    return stack.api("post", "/api/imports", who=stack.admin, files=files, data=data)


def leads_csv(rows: int, first_phone: int) -> bytes:
    lines = ["name,phone"] + [f"Student {n},+91{first_phone + n}" for n in range(rows)]
    return ("\n".join(lines) + "\n").encode()


def new_upload(stack: Stack, data: bytes, parts: int) -> tuple[str, list[bytes]]:
    size = -(-len(data) // parts)
    chunks = [data[i : i + size] for i in range(0, len(data), size)]
    body = {
        "call_log_id": stack.call_log(),
        "filename": "call.wav",
        "expected_chunks": len(chunks),
        "total_size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    created = stack.api("post", "/api/recordings/uploads", json=body)
    assert created.status_code == 201, created.text
    return created.json()["upload_id"], chunks


def put_chunk(stack: Stack, upload_id: str, index: int, chunk: bytes) -> requests.Response:
    headers = {"Content-Type": "application/octet-stream"}
    return stack.api(
        "put", f"/api/recordings/uploads/{upload_id}/chunks/{index}", data=chunk, headers=headers
    )


def one_shot(stack: Stack, data: bytes) -> requests.Response:
    files = {"file": ("call.wav", io.BytesIO(data), "audio/wav")}
    return stack.api("post", f"/api/call-logs/{stack.call_log()}/recording", files=files)


def upload_state(stack: Stack, upload_id: str) -> dict:
    return stack.api("get", f"/api/recordings/uploads/{upload_id}").json()


def wait_for_upload(stack: Stack, upload_id: str, status: str, timeout: float = 60) -> dict:
    def reached():
        state = upload_state(stack, upload_id)
        return state if state["status"] == status else None

    return wait_for(reached, timeout=timeout, what=f"upload {upload_id} to be {status}", watch=stack.worker)


def wait_for_job_state(stack: Stack, job_id: str, state: str, timeout: float = 60) -> dict:
    def reached():
        row = job_row(stack.engine, job_id)
        return row if row is not None and row["state"] == state else None

    return wait_for(reached, timeout=timeout, what=f"job {job_id} to be {state}", watch=stack.worker)


def wait_for_import(stack: Stack, import_id: int, timeout: float = 60) -> dict:
    def over():
        state = stack.api("get", f"/api/imports/{import_id}", who=stack.admin).json()
        return state if state["status"] in ("completed", "failed", "cancelled") else None

    return wait_for(over, timeout=timeout, what=f"import {import_id} to end", watch=stack.worker)


# -- S3 -----------------------------------------------------------------------------------------------------


def test_s3_down_uploads_and_imports_are_503_and_all_completes_once_it_is_back(stack, s3_server):
    audio = wav(2.0)
    upload_id, chunks = new_upload(stack, audio, 3)
    for index in (0, 1):
        assert put_chunk(stack, upload_id, index, chunks[index]).status_code == 200
    queued_id, [whole] = new_upload(stack, audio, 1)
    assert put_chunk(stack, queued_id, 0, whole).status_code == 200
    browser = signed_in(stack, stack.admin)
    uploads_before, keys_before = stack.count("recording_uploads"), stack.bucket_keys()
    csv = leads_csv(50, 9_000_000_000)

    with s3_server.stopped():
        assert_unavailable(put_chunk(stack, upload_id, 2, chunks[2]), "storage_unavailable")
        assert_unavailable(post_import(stack, csv), "storage_unavailable")
        assert_unavailable(one_shot(stack, audio), "storage_unavailable")
        assert_unavailable_page(import_form(stack, browser, csv), "File storage unavailable", navigation=True)
        health = requests.get(f"{stack.base}/healthz", timeout=30)
        assert health.status_code == 503 and health.json()["storage"].startswith("down")
        # Nothing was made of the refused requests.
        assert upload_state(stack, upload_id)["received"] == [0, 1]
        assert stack.count("lead_imports") == 0 and stack.count("recording_uploads") == uploads_before

        # A recording job that runs while S3 is down fails its attempt and waits for its retry.
        job_id = stack.api("post", f"/api/recordings/uploads/{queued_id}/complete").json()["job_id"]
        wait_for_job_state(stack, job_id, "retrying")
        assert upload_state(stack, queued_id)["status"] == "processing"

    assert stack.bucket_keys() == keys_before  # every chunk stored before the outage is still there
    # The job's retry stores the recording, with nobody's help.
    assert wait_for_upload(stack, queued_id, "completed")["recording_id"] is not None
    # The refused chunk, sent again, is taken, and its recording completes.
    assert put_chunk(stack, upload_id, 2, chunks[2]).status_code == 200
    completed = stack.api("post", f"/api/recordings/uploads/{upload_id}/complete")
    assert completed.status_code == 202, completed.text
    done = wait_for_upload(stack, upload_id, "completed")
    assert done["recording_id"] is not None and done["error"] is None
    # The refused import and one-shot upload, sent again, complete too.
    imported = post_import(stack, csv)
    assert imported.status_code == 202, imported.text
    assert wait_for_import(stack, imported.json()["id"])["successful_rows"] == 50
    sent = one_shot(stack, audio)
    assert sent.status_code == 202, sent.text
    wait_for_job_state(stack, sent.json()["job_id"], "succeeded")


# -- PostgreSQL ---------------------------------------------------------------------------------------------


def test_postgres_down_during_an_import_is_503_and_the_import_completes_exactly_once(stack):
    rows = 12_000  # two batches: the database goes while the import is under way
    browser = signed_in(stack, stack.admin)
    upload_id, [whole] = new_upload(stack, wav(1.0), 1)
    started = post_import(stack, leads_csv(rows, 8_000_000_000))
    assert started.status_code == 202, started.text
    import_id = started.json()["id"]
    wait_for(
        lambda: stack.count("lead_imports", f"id = {import_id} AND status = 'running'"),
        timeout=30,
        what="the import to run",
    )
    keys_before = stack.bucket_keys()

    with stack.database_down():
        assert_unavailable(
            stack.api("get", f"/api/imports/{import_id}", who=stack.admin), "database_unavailable"
        )
        assert_unavailable(post_import(stack, leads_csv(10, 7_000_000_000)), "database_unavailable")
        assert_unavailable(put_chunk(stack, upload_id, 0, whole), "database_unavailable")
        page = browser.get(f"{stack.base}/imports", timeout=30)
        assert_unavailable_page(page, "Database unavailable", navigation=False)
        health = requests.get(f"{stack.base}/healthz", timeout=30)
        assert health.status_code == 503 and health.json()["database"].startswith("down")
        assert stack.bucket_keys() == keys_before  # the refused import stored no file

    # Back: the import goes on from its last committed batch; every row becomes one lead, once.
    done = wait_for_import(stack, import_id, timeout=90)
    assert done["status"] == "completed", done
    assert (done["successful_rows"], done["duplicate_rows"], done["failed_rows"]) == (rows, 0, 0)
    assert stack.count("leads", f"import_id = {import_id}") == rows
    assert stack.count("lead_imports") == 1 + stack.count("lead_imports", f"id < {import_id}")
    # The refused chunk, sent again, is taken; the page answers again.
    assert put_chunk(stack, upload_id, 0, whole).status_code == 200
    assert browser.get(f"{stack.base}/imports", timeout=30).status_code == 200


# -- Redis --------------------------------------------------------------------------------------------------


def test_redis_down_is_503_queue_unavailable_and_a_queued_job_finishes_once_it_is_back(stack):
    audio = wav(1.0)
    queued_id, [queued_chunk] = new_upload(stack, audio, 1)
    refused_id, [refused_chunk] = new_upload(stack, audio, 1)
    for upload_id, chunk in ((queued_id, queued_chunk), (refused_id, refused_chunk)):
        assert put_chunk(stack, upload_id, 0, chunk).status_code == 200
    browser = signed_in(stack, stack.admin)
    imports_before = stack.count("lead_imports")

    # A job queued with no worker to take it: it waits in Redis through the outage.
    stack.worker.stop()
    job_id = stack.api("post", f"/api/recordings/uploads/{queued_id}/complete").json()["job_id"]

    with stack.redis.stopped():
        stack.restart_worker()  # a worker that starts while Redis is down waits for it
        refused = stack.api("post", f"/api/recordings/uploads/{refused_id}/complete")
        assert_unavailable(refused, "queue_unavailable")
        assert upload_state(stack, refused_id)["status"] == "receiving"  # nothing changed
        assert_unavailable(post_import(stack, leads_csv(10, 6_000_000_000)), "queue_unavailable")
        page = import_form(stack, browser, leads_csv(10, 6_000_000_000))
        assert page.status_code == 503 and int(page.headers["Retry-After"]) > 0
        assert 'href="/imports"' in page.text and "queue" in page.text  # the form again, saying why
        health = requests.get(f"{stack.base}/healthz", timeout=30)
        assert health.status_code == 503 and health.json()["broker"].startswith("down")
        assert upload_state(stack, queued_id)["status"] == "processing"
        # The refused imports hold no file: nothing to import later by mistake.
        assert stack.count("lead_imports", f"id > {imports_before} AND storage_key IS NOT NULL") == 0

    assert wait_for_upload(stack, queued_id, "completed", timeout=90)["recording_id"] is not None
    wait_for_job_state(stack, job_id, "succeeded")
    sent_again = stack.api("post", f"/api/recordings/uploads/{refused_id}/complete")
    assert sent_again.status_code == 202, sent_again.text
    assert wait_for_upload(stack, refused_id, "completed")["recording_id"] is not None
