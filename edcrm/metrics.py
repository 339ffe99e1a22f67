"""Prometheus metrics of the web process, served by `GET /metrics` (edcrm.routes.metrics).

Counted as things happen, in this process:
- `edcrm_http_requests_total{method,endpoint,status}` and `edcrm_http_request_duration_seconds{method,
  endpoint}`: every request, labelled by its Flask endpoint (`api.get_import`), never by its raw path,
  so that ids in URLs cannot make the label set grow without bound;
- `edcrm_upload_bytes_total{kind}`: bytes of uploads received and stored (`csv`, `recording_chunk`,
  `recording`), counted where they are streamed (edcrm.imports.upload, edcrm.recordings.uploads);
- in the embedded mode only, the `dramatiq_*` metrics of the in-process workers (`JobMetrics`, the same
  names and labels as Dramatiq's Prometheus middleware exposes from `dramatiq edcrm.actors` workers).

Read from the database at each scrape (`DatabaseCollector`), so every web process answers the same:
`edcrm_jobs{queue,state}`, `edcrm_lead_imports{status}`, `edcrm_import_rows_total{outcome}` and
`edcrm_metrics_database_up`.

The metric objects are module-level, created once per process and registered in no registry: each scrape
builds a registry of its own, so the many apps of the tests never meet a "Duplicated timeseries" error.
With PROMETHEUS_MULTIPROC_DIR set (several gunicorn processes, see gunicorn.conf.py), prometheus_client
keeps the values in files of that directory and a scrape adds up those of every process.
"""

from __future__ import annotations

import logging
import os
import time

import dramatiq
import sqlalchemy as sa
from dramatiq.common import current_millis
from dramatiq.middleware import Middleware
from flask import Flask, Response, request
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
    values,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy.exc import SQLAlchemyError

log = logging.getLogger(__name__)

# No `*_created` series beside every counter and histogram: they double the series for nothing here.
disable_created_metrics()

#: Whether this process's metrics live in PROMETHEUS_MULTIPROC_DIR's files (decided by prometheus_client
#: when it was first imported, from the environment), and that directory.
MULTIPROCESS_DIR = (
    os.environ.get("PROMETHEUS_MULTIPROC_DIR") if getattr(values.ValueClass, "_multiprocess", False) else None
)

#: The classic text format (what generate_latest writes for these names), which every Prometheus version
#: and compatible scraper reads.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: HTTP methods kept as they are in labels; anything else a client invents is counted as "other".
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: The endpoint label of a request that matched no route (404, 405).
UNMATCHED = "unmatched"
UPLOAD_KINDS = ("csv", "recording_chunk", "recording")

HTTP_REQUESTS = Counter(
    "edcrm_http_requests",
    "HTTP requests answered, by method, Flask endpoint and status code.",
    ["method", "endpoint", "status"],
    registry=None,
)
HTTP_DURATION = Histogram(
    "edcrm_http_request_duration_seconds",
    "Time from a request's arrival to its response (headers; a streamed body is not included).",
    ["method", "endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
    registry=None,
)
UPLOAD_BYTES = Counter(
    "edcrm_upload_bytes",
    "Bytes of uploads received and stored: csv (lead imports), recording_chunk, recording (one-shot).",
    ["kind"],
    registry=None,
)
for _kind in UPLOAD_KINDS:  # present (at 0) from the start: rate() and alerts need no absent()
    UPLOAD_BYTES.labels(_kind)

# The embedded mode's job metrics: Dramatiq's names, labels and buckets (dramatiq.middleware.prometheus).
_JOB_LABELS = ["queue_name", "actor_name"]
DRAMATIQ_DURATION_BUCKETS = (5, 10, 25, 50, 75, 100, 250, 500, 750, 1000, 2500, 5000, 7500, 10000, 30000)
DRAMATIQ_DURATION_BUCKETS += (60000, 600000, 900000, float("inf"))
MESSAGES = Counter("dramatiq_messages", "The total number of messages processed.", _JOB_LABELS, registry=None)
MESSAGE_ERRORS = Counter(
    "dramatiq_message_errors", "The total number of errored messages.", _JOB_LABELS, registry=None
)
MESSAGE_RETRIES = Counter(
    "dramatiq_message_retries", "The total number of retried messages.", _JOB_LABELS, registry=None
)
MESSAGE_REJECTS = Counter(
    "dramatiq_message_rejects", "The total number of dead-lettered messages.", _JOB_LABELS, registry=None
)
MESSAGES_IN_PROGRESS = Gauge(
    "dramatiq_messages_inprogress",
    "The number of messages in progress.",
    _JOB_LABELS,
    multiprocess_mode="livesum",
    registry=None,
)
DELAYED_IN_PROGRESS = Gauge(
    "dramatiq_delayed_messages_inprogress",
    "The number of delayed messages in memory.",
    _JOB_LABELS,
    multiprocess_mode="livesum",
    registry=None,
)
MESSAGE_DURATION = Histogram(
    "dramatiq_message_duration_milliseconds",
    "The time spent processing messages.",
    _JOB_LABELS,
    buckets=DRAMATIQ_DURATION_BUCKETS,
    registry=None,
)

#: What a scrape of this process shows, besides the database's figures.
PROCESS_METRICS = (
    HTTP_REQUESTS,
    HTTP_DURATION,
    UPLOAD_BYTES,
    MESSAGES,
    MESSAGE_ERRORS,
    MESSAGE_RETRIES,
    MESSAGE_REJECTS,
    MESSAGES_IN_PROGRESS,
    DELAYED_IN_PROGRESS,
    MESSAGE_DURATION,
)


def count_upload(kind: str, size: int) -> None:
    """size bytes of an upload of this kind were received and stored."""
    UPLOAD_BYTES.labels(kind).inc(size)


# -- HTTP requests ----------------------------------------------------------------------------------------

_STARTED = "edcrm.metrics.started"


def _start_timer() -> None:
    request.environ[_STARTED] = time.perf_counter()


def _count_request(response: Response) -> Response:
    method = request.method if request.method in KNOWN_METHODS else "other"
    endpoint = request.endpoint or UNMATCHED
    HTTP_REQUESTS.labels(method, endpoint, str(response.status_code)).inc()
    started = request.environ.get(_STARTED)
    if started is not None:
        HTTP_DURATION.labels(method, endpoint).observe(time.perf_counter() - started)
    return response


def init_app(app: Flask) -> None:
    """Count every request of app. The timer starts before any other before_request function (CSRF,
    authentication), so that a request they refuse is timed as well."""
    app.before_request_funcs.setdefault(None, []).insert(0, _start_timer)
    app.after_request(_count_request)


# -- what the database knows ------------------------------------------------------------------------------


class DatabaseCollector:
    """The job ledger and the lead imports, read at scrape time through the app's session.

    Two cheap queries: the jobs grouped by (queue, state), which the `ix_jobs_queue_state` index answers,
    and sums over `lead_imports` (one row per uploaded file). A database that does not answer leaves
    `edcrm_metrics_database_up` at 0 and the rest of the scrape intact.
    """

    def describe(self):
        return []  # registering the collector must not query anything

    def collect(self):
        from .config import QUEUES
        from .extensions import db
        from .models import ImportStatus, Job, JobState, LeadImport

        up = GaugeMetricFamily("edcrm_metrics_database_up", "1 if the database answered this scrape, else 0.")
        try:
            jobs = db.session.execute(
                sa.select(Job.queue, Job.state, sa.func.count()).group_by(Job.queue, Job.state)
            ).all()
            imports = db.session.execute(
                sa.select(LeadImport.status, sa.func.count()).group_by(LeadImport.status)
            ).all()
            rows = db.session.execute(
                sa.select(
                    sa.func.coalesce(sa.func.sum(LeadImport.successful_rows), 0),
                    sa.func.coalesce(sa.func.sum(LeadImport.failed_rows), 0),
                    sa.func.coalesce(sa.func.sum(LeadImport.duplicate_rows), 0),
                )
            ).one()
        except SQLAlchemyError as exc:
            log.warning("metrics: the database did not answer: %s", exc)
            db.session.rollback()
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up

        # Every queue and state, zeros included: `edcrm_jobs{state="failed"} > 0` needs the series.
        counts = {(queue, JobState(state)): n for queue, state, n in jobs}
        queues = sorted(set(QUEUES) | {queue for queue, _ in counts})
        by_state = GaugeMetricFamily(
            "edcrm_jobs", "Jobs in the ledger, by queue and state.", labels=["queue", "state"]
        )
        for queue in queues:
            for state in JobState:
                by_state.add_metric([queue, state.value], counts.get((queue, state), 0))
        yield by_state

        statuses = {ImportStatus(status): n for status, n in imports}
        by_status = GaugeMetricFamily("edcrm_lead_imports", "Lead imports, by status.", labels=["status"])
        for status in ImportStatus:
            by_status.add_metric([status.value], statuses.get(status, 0))
        yield by_status

        imported = CounterMetricFamily(
            "edcrm_import_rows",
            "CSV rows processed by lead imports: imported (became leads), invalid, duplicate.",
            labels=["outcome"],
        )
        for outcome, total in zip(("imported", "invalid", "duplicate"), rows, strict=True):
            imported.add_metric([outcome], total)
        yield imported


def render() -> tuple[bytes, str]:
    """This process's metrics (all web processes' in multiprocess mode) and the database's, in the
    Prometheus text format; and its content type. Called inside an app context."""
    registry = CollectorRegistry()
    if MULTIPROCESS_DIR:
        MultiProcessCollector(registry, path=MULTIPROCESS_DIR)
    else:
        for metric in PROCESS_METRICS:
            registry.register(metric)
        # Memory, CPU, open files, the GC: only meaningful for one process, so not in multiprocess mode.
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
    registry.register(DatabaseCollector())
    return generate_latest(registry), CONTENT_TYPE


# -- the embedded mode's workers --------------------------------------------------------------------------


class JobMetrics(Middleware):
    """The embedded mode's worker metrics, under the names of Dramatiq's Prometheus middleware (which
    needs the `dramatiq` CLI: it forks an HTTP server and takes over PROMETHEUS_MULTIPROC_DIR, neither of
    which fits inside gunicorn). The web's `/metrics` shows them, so one dashboard fits both modes.

    Last in the broker's middleware: a message that an earlier middleware skips before it starts (the
    ledger skips cancelled and superseded jobs) never reached before_process_message here, and is not
    counted as processed.
    """

    def __init__(self) -> None:
        self._started: dict[str, int] = {}
        self._delayed: set[str] = set()

    def after_enqueue(self, broker: dramatiq.Broker, message: dramatiq.Message, delay: int | None) -> None:
        if "retries" in message.options:
            MESSAGE_RETRIES.labels(message.queue_name, message.actor_name).inc()

    def after_nack(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        MESSAGE_REJECTS.labels(message.queue_name, message.actor_name).inc()

    def before_delay_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        self._delayed.add(message.message_id)
        DELAYED_IN_PROGRESS.labels(message.queue_name, message.actor_name).inc()

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        labels = (message.queue_name, message.actor_name)
        if message.message_id in self._delayed:
            self._delayed.discard(message.message_id)
            DELAYED_IN_PROGRESS.labels(*labels).dec()
        MESSAGES_IN_PROGRESS.labels(*labels).inc()
        self._started[message.message_id] = current_millis()

    def after_process_message(
        self, broker: dramatiq.Broker, message: dramatiq.MessageProxy, *, result=None, exception=None
    ) -> None:
        started = self._started.pop(message.message_id, None)
        if started is None:
            return  # skipped before it started
        labels = (message.queue_name, message.actor_name)
        MESSAGE_DURATION.labels(*labels).observe(current_millis() - started)
        MESSAGES_IN_PROGRESS.labels(*labels).dec()
        MESSAGES.labels(*labels).inc()
        if exception is not None:
            MESSAGE_ERRORS.labels(*labels).inc()

    after_skip_message = after_process_message
