"""The production processes on real services, for end-to-end tests: gunicorn and a `dramatiq edcrm.actors`
worker on a fresh PostgreSQL database, Redis and a fresh bucket of an S3 server over HTTP: moto's (in the
test's process: the web and the worker reach it only by HTTP) or Ceph RGW (tests/support/rgw.py).
`stack` is on moto's, `s3_stack` on each in turn; `running_stack` builds one with more webs or settings."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
import sqlalchemy as sa

from tests.support.processes import (
    MAKE_CALL_LOG,
    REPO,
    Service,
    free_port,
    fresh_postgres_database,
    http_get,
    run_flask,
    service_env,
    start_dramatiq,
    start_gunicorn,
    wait_for,
)


@dataclass
class Stack:
    base: str  # the web's URL (the first web's, when there are several)
    http: requests.Session  # the API session of a telecaller
    admin: requests.Session  # the API session of their branch's admin
    telecaller_ids: list[int]  # the branch's
    call_log_id: int  # one of the telecaller's call logs
    engine: sa.Engine  # on the jobs' database
    bucket: str
    web: Service
    worker: Service
    s3: Any = None  # the S3 server: moto's (tests/support/s3_server.py) or RGW's (tests/support/rgw.py)
    database_url: str = ""
    token: str = ""  # the telecaller's API token
    webs: list[Service] = field(default_factory=list)  # every web, each in a working folder of its own
    bases: list[str] = field(default_factory=list)  # their URLs

    def api(self, path: str, method: str = "get", *, session: requests.Session | None = None, **kwargs):
        """A request of the telecaller's (or of session) to the web; the response."""
        return (session or self.http).request(method, f"{self.base}{path}", timeout=60, **kwargs)

    def new_call_log(self) -> int:
        """Another call log of the telecaller's, on the lead of the first (one recording each): its id."""
        lead_id = self.api(f"/api/call-logs/{self.call_log_id}").json()["lead_id"]
        body = {"lead_id": lead_id, "outcome": "connected", "duration_seconds": 60}
        made = self.api("/api/call-logs", "post", json=body)
        assert made.status_code == 201, made.text
        return made.json()["id"]


def _session(token: str) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    return session


@contextlib.contextmanager
def running_stack(
    postgres_url: str,
    redis_url: str,
    s3,
    tmp_path: Path,
    *,
    webs: int = 1,
    settings: dict[str, str] | None = None,
) -> Iterator[Stack]:
    """gunicorn (webs of them, each in a working folder, instance folder and TMPDIR of its own) and a
    dramatiq worker on fresh PostgreSQL and Redis databases and a fresh bucket of s3 (moto's or RGW's
    server), with settings added to their environment."""
    redis.Redis.from_url(redis_url).flushdb()
    bucket = s3.create_bucket()
    try:
        with fresh_postgres_database(postgres_url) as database_url:
            env = service_env(
                DATABASE_URL=database_url,
                REDIS_URL=redis_url,
                STORAGE_URL=f"s3://{bucket}/edcrm",
                S3_ENDPOINT_URL=s3.endpoint_url,
                EDCRM_INSTANCE_PATH=tmp_path / "instance",
                SECRET_KEY="x",
                WEB_CONCURRENCY="1",
                # Long enough to see the job waiting for its retry while S3 is down.
                JOB_MIN_BACKOFF_MS="3000",
                JOB_MAX_BACKOFF_MS="3000",
                # The worker's Prometheus port (9191 by default) is another stack's or test run's, too.
                dramatiq_prom_port=str(free_port()),
                **s3.aws_env,
                **(settings or {}),
            )
            run_flask("db", "upgrade", env=env)
            demo = json.loads(run_flask("edcrm", "seed-demo", "--json", env=env).stdout)
            telecaller = demo["telecallers"][0]
            argv = [sys.executable, "-c", MAKE_CALL_LOG, str(telecaller["id"])]
            made = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, check=True)
            engine = sa.create_engine(database_url)
            try:
                with contextlib.ExitStack() as running:
                    services, bases = [], []
                    for number in range(webs):
                        port = free_port()
                        if webs == 1:
                            web = start_gunicorn({**env, "PORT": str(port)}, tmp_path / "gunicorn.log")
                        else:  # a host of its own: nothing local in common with the others
                            folder = tmp_path / f"web{number}"
                            (folder / "tmp").mkdir(parents=True)
                            web_env = {
                                **env,
                                "PORT": str(port),
                                "EDCRM_INSTANCE_PATH": str(folder / "instance"),
                                "TMPDIR": str(folder / "tmp"),
                            }
                            web = start_gunicorn(web_env, folder / "gunicorn.log", cwd=folder)
                        services.append(running.enter_context(web))
                        bases.append(f"http://127.0.0.1:{port}")
                    worker = running.enter_context(
                        start_dramatiq(env, tmp_path / "dramatiq.log", processes=1, threads=2)
                    )
                    for web, base in zip(services, bases, strict=True):
                        wait_for(
                            functools.partial(http_get, f"{base}/healthz"),
                            timeout=60,
                            what=web.name,
                            watch=web,
                        )
                    yield Stack(
                        base=bases[0],
                        http=_session(telecaller["token"]),
                        admin=_session(demo["admin"]["token"]),
                        telecaller_ids=[user["id"] for user in demo["telecallers"]],
                        call_log_id=int(made.stdout.strip()),
                        engine=engine,
                        bucket=bucket,
                        web=services[0],
                        worker=worker,
                        s3=s3,
                        database_url=database_url,
                        token=telecaller["token"],
                        webs=services,
                        bases=bases,
                    )
            finally:
                engine.dispose()
    finally:
        if hasattr(s3, "delete_bucket"):  # RGW keeps its objects in memory, and outlives the session
            with contextlib.suppress(Exception):
                s3.delete_bucket(bucket)


@pytest.fixture
def stack(postgres_url, redis_url, s3_server, tmp_path):
    """gunicorn and a dramatiq worker on fresh PostgreSQL and Redis databases and a fresh bucket of moto's
    S3 server."""
    with running_stack(postgres_url, redis_url, s3_server, tmp_path) as running:
        yield running


@pytest.fixture
def s3_stack(postgres_url, redis_url, s3_endpoint, tmp_path):
    """The stack on moto's S3 server, then on Ceph RGW (see `s3_endpoint` in tests/support/rgw.py)."""
    with running_stack(postgres_url, redis_url, s3_endpoint, tmp_path) as running:
        yield running


def send_chunks(stack: Stack, data: bytes, parts: int, order) -> str:
    """data, cut into `parts` chunks, sent in `order` to a new upload session of the call log; its id."""
    size = -(-len(data) // parts)
    chunks = [data[i : i + size] for i in range(0, len(data), size)]
    body = {
        "call_log_id": stack.call_log_id,
        "filename": "call.bin",
        "expected_chunks": len(chunks),
        "total_size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    created = stack.api("/api/recordings/uploads", "post", json=body)
    assert created.status_code == 201, created.text
    upload_id = created.json()["upload_id"]
    for index in order:
        headers = {"X-Chunk-SHA256": hashlib.sha256(chunks[index]).hexdigest()}
        url = f"/api/recordings/uploads/{upload_id}/chunks/{index}"
        sent = stack.api(url, "put", data=chunks[index], headers=headers)
        assert sent.status_code == 200, sent.text
    return upload_id
