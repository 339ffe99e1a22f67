"""gunicorn settings for `make run` and the Procfile's web process.

Embedded mode (no REDIS_URL): one worker process, which also runs the job workers and the periodic
scheduler (edcrm.jobs.embedded), since the in-memory broker lives inside it.
With REDIS_URL: WEB_CONCURRENCY processes serve the web only; `dramatiq edcrm.actors` runs the jobs.
"""

import os

EMBEDDED = not os.environ.get("REDIS_URL")

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '5000')}"
worker_class = "gthread"
workers = 1 if EMBEDDED else int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("WEB_THREADS", "8"))
# gthread: the worker's heartbeat, not a per-request limit; uploads stream for as long as they take.
timeout = 120
graceful_timeout = 30
keepalive = 5
accesslog = "-"
errorlog = "-"
# Uploads are streamed to storage by the app; gunicorn need not buffer them.
limit_request_line = 8190


def post_worker_init(worker):
    if EMBEDDED:
        from edcrm.jobs import embedded

        worker.edcrm_jobs = embedded.start(worker.wsgi)


def worker_exit(server, worker):
    jobs = getattr(worker, "edcrm_jobs", None)
    if jobs is not None:
        jobs.stop()
