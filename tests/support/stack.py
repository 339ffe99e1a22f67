"""The production processes on real services, for end-to-end tests: gunicorn and a `dramatiq edcrm.actors`
worker on a fresh PostgreSQL database, Redis and a fresh bucket of moto's S3 server over HTTP (in the
test's process: the web and the worker reach it only by HTTP)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass

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
from tests.support.s3_server import AWS_ENV


@dataclass
class Stack:
    base: str  # the web's URL
    http: requests.Session  # the API session of a telecaller
    admin: requests.Session  # the API session of their branch's admin
    telecaller_ids: list[int]  # the branch's
    call_log_id: int  # one of the telecaller's call logs
    engine: sa.Engine  # on the jobs' database
    bucket: str
    web: Service
    worker: Service

    def api(self, path: str, method: str = "get", *, session: requests.Session | None = None, **kwargs):
        """A request of the telecaller's (or of session) to the web; the response."""
        return (session or self.http).request(method, f"{self.base}{path}", timeout=60, **kwargs)


def _session(token: str) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    return session


@pytest.fixture
def stack(postgres_url, redis_url, s3_server, tmp_path):
    """gunicorn and a dramatiq worker on fresh PostgreSQL and Redis databases and a fresh bucket."""
    redis.Redis.from_url(redis_url).flushdb()
    bucket = s3_server.create_bucket()
    with fresh_postgres_database(postgres_url) as database_url:
        port = free_port()
        env = service_env(
            DATABASE_URL=database_url,
            REDIS_URL=redis_url,
            STORAGE_URL=f"s3://{bucket}/edcrm",
            S3_ENDPOINT_URL=s3_server.endpoint_url,
            EDCRM_INSTANCE_PATH=tmp_path / "instance",
            PORT=port,
            SECRET_KEY="x",
            WEB_CONCURRENCY=1,
            # Long enough to see the job waiting for its retry while S3 is down.
            JOB_MIN_BACKOFF_MS="3000",
            JOB_MAX_BACKOFF_MS="3000",
            **AWS_ENV,
        )
        run_flask("db", "upgrade", env=env)
        demo = json.loads(run_flask("edcrm", "seed-demo", "--json", env=env).stdout)
        telecaller = demo["telecallers"][0]
        argv = [sys.executable, "-c", MAKE_CALL_LOG, str(telecaller["id"])]
        made = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, check=True)
        engine = sa.create_engine(database_url)
        try:
            with (
                start_gunicorn(env, tmp_path / "gunicorn.log") as web,
                start_dramatiq(env, tmp_path / "dramatiq.log", processes=1, threads=2) as worker,
            ):
                base = f"http://127.0.0.1:{port}"
                wait_for(lambda: http_get(f"{base}/healthz"), timeout=60, what="gunicorn", watch=web)
                yield Stack(
                    base=base,
                    http=_session(telecaller["token"]),
                    admin=_session(demo["admin"]["token"]),
                    telecaller_ids=[user["id"] for user in demo["telecallers"]],
                    call_log_id=int(made.stdout.strip()),
                    engine=engine,
                    bucket=bucket,
                    web=web,
                    worker=worker,
                )
        finally:
            engine.dispose()


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
