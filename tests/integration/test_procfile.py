"""`honcho start` runs the Procfile against PostgreSQL and Redis: web, one worker group per queue and the
scheduler come up, and a job sent from the CLI goes through them."""

from __future__ import annotations

import redis
import sqlalchemy as sa

from tests.support.processes import (
    BIN,
    Service,
    free_port,
    fresh_postgres_database,
    http_get,
    run_flask,
    service_env,
    wait_for,
    wait_for_job,
)


def test_honcho_runs_every_process_of_the_procfile(postgres_url, redis_url, tmp_path):
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()
    with fresh_postgres_database(postgres_url) as database:
        port = free_port()
        env = service_env(
            DATABASE_URL=database,
            REDIS_URL=redis_url,
            EDCRM_INSTANCE_PATH=tmp_path / "instance",
            STORAGE_URL=(tmp_path / "storage").as_uri(),
            SECRET_KEY="procfile",
            PORT=port,
            WEB_CONCURRENCY="1",
        )
        env["PATH"] = f"{BIN}:{env['PATH']}"  # as with the virtualenv activated
        run_flask("db", "upgrade", env=env)
        argv = [str(BIN / "honcho"), "start", "-f", "Procfile", "-e", "/dev/null"]
        with Service(argv, env=env, log_path=tmp_path / "honcho.log", name="honcho start") as honcho:
            health = wait_for(
                lambda: http_get(f"http://127.0.0.1:{port}/healthz"), timeout=30, what="the web", watch=honcho
            )
            assert health == (200, {"database": "ok", "broker": "ok", "storage": "ok"})

            job_id = run_flask("edcrm", "jobs", "ping", env=env).stdout.strip()
            engine = sa.create_engine(database)
            try:
                assert wait_for_job(engine, job_id, "succeeded", timeout=30, watch=honcho)["attempts"] == 1
            finally:
                engine.dispose()

            log = honcho.output(tail=200_000)
            for process in ("web", "worker_default", "worker_csv_import", "worker_recordings", "scheduler"):
                assert f"{process}.1 started" in log, process
            assert "edcrm.actors.maintenance:prune_jobs@default" in log  # periodiq scheduled the pruner
