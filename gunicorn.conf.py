"""gunicorn settings for `make run` and the Procfile's web process: `gunicorn -c gunicorn.conf.py app:app`.

Embedded mode (no REDIS_URL): one worker process, which also runs the job workers and the periodic
scheduler (edcrm.jobs.embedded), since the in-memory broker lives inside it.
With REDIS_URL: WEB_CONCURRENCY processes (default 2) serve the web only; `dramatiq edcrm.actors` runs
the jobs and `periodiq edcrm.actors` schedules the periodic ones.

Metrics: with more than one process, each would answer /metrics with its own counts only, so
prometheus_client's multiprocess mode is switched on: every process writes its values to files in
PROMETHEUS_MULTIPROC_DIR and /metrics adds them up. Unset, a fresh directory is made for this server and
removed when it stops; set, it must be this server's own, and is emptied at start.
"""

import os
import shutil
import tempfile
from pathlib import Path

EMBEDDED = not os.environ.get("REDIS_URL")

# HOST: loopback unless set (`make run` serves demo logins with public passwords); the Procfile's web sets
# 0.0.0.0. An IPv6 address goes in brackets.
_host, _port = (os.environ.get("HOST") or "127.0.0.1").strip("[]"), os.environ.get("PORT") or 5000
bind = f"[{_host}]:{_port}" if ":" in _host else f"{_host}:{_port}"
# gthread whose event loop reads heads and short bodies, so slow clients cannot hold every thread, with
# a read timeout of BODY_TIMEOUT_S on each connection (see edcrm.gunicorn_worker).
worker_class = "edcrm.gunicorn_worker.ThreadWorker"
# Embedded: exactly one process, or each would run its own job workers, scheduler and restart re-sends.
workers = 1 if EMBEDDED else int(os.environ.get("WEB_CONCURRENCY") or 2)
# Of the threads, all but a reserve (a quarter, at least 2) may stream request bodies (uploads) at once;
# the reserve answers everything else, /healthz included, however many uploads are in flight or stalled.
threads = int(os.environ.get("WEB_THREADS") or 8)
# The app (and the in-memory broker it builds) must be created in the worker process, not the master.
preload_app = False

# With gthread, `timeout` is the worker's heartbeat: its main loop checks in every second whatever its
# threads are doing, so a long upload is not cut off by it; only a worker whose loop is stuck is killed.
# gunicorn itself sets no limit on request bodies: the app enforces MAX_*_BYTES.
timeout = 120
graceful_timeout = 30  # for requests in flight (and the embedded job workers) on restart or shutdown
keepalive = 5

# The longest request line gunicorn takes (its maximum; the default is 4094): the app itself answers a
# URL over 4096 bytes with the API's 414 (edcrm.routes.limits). Longer lines, a header line over 8190
# bytes or more than 100 headers are refused by gunicorn with its own 414/431 page.
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190

accesslog = "-"  # stdout
errorlog = "-"  # stderr
# No runtime control socket (gunicorn 25.1+): unused here, and every instance on the machine would share
# the same path in $HOME, each new one taking it over from the last.
control_socket_disable = True


def on_starting(server):
    """In the master, before any worker is forked (they inherit the environment, and import
    prometheus_client only when they load the app)."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        Path(path).mkdir(parents=True, exist_ok=True)
        for stale in Path(path).glob("*.db"):  # a previous run's counts would be added to this one's
            stale.unlink()
    elif workers > 1:
        path = tempfile.mkdtemp(prefix="edcrm-web-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
        server.edcrm_metrics_dir = path


def child_exit(server, worker):
    """A web process is gone: its live gauges stop counting (its counters still do)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    path = getattr(server, "edcrm_metrics_dir", None)
    if path:
        shutil.rmtree(path, ignore_errors=True)


def post_worker_init(worker):
    """Embedded mode: start the job workers in the process that serves. gunicorn calls this hook in the
    worker process right after loading the app (Worker.init_process: load_wsgi(), then this hook), so
    worker.wsgi is the Flask app of `app:app`."""
    if EMBEDDED:
        from edcrm.jobs.embedded import start

        worker.edcrm_jobs = start(worker.wsgi)


def worker_exit(server, worker):
    """Embedded mode: let the job workers finish the messages they are running (up to 10 s). Jobs not
    yet started stay `enqueued` in the ledger, and the next start sends them again."""
    jobs = getattr(worker, "edcrm_jobs", None)
    if jobs is not None:
        jobs.stop()
