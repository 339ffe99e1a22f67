"""A scrape: this process's metrics (every web process's, in multiprocess mode) and the database's, in
the Prometheus text format.

The metric objects are module-level, created once per process and registered in no registry: each scrape
builds a registry of its own, so the many apps of the tests never meet a "Duplicated timeseries" error.
With PROMETHEUS_MULTIPROC_DIR set (several gunicorn processes, see gunicorn.conf.py), prometheus_client
keeps the values in files of that directory and a scrape adds up those of every process.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector

from .database import DatabaseCollector
from .jobs import (
    DELAYED_IN_PROGRESS,
    MESSAGE_DURATION,
    MESSAGE_ERRORS,
    MESSAGE_REJECTS,
    MESSAGE_RETRIES,
    MESSAGES,
    MESSAGES_IN_PROGRESS,
)
from .requests import HTTP_DURATION, HTTP_REQUESTS, UPLOAD_BYTES

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
