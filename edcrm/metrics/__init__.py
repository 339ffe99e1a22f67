"""Prometheus metrics of the web process, served by `GET /metrics` (edcrm.routes.metrics).

- requests (edcrm.metrics.requests): every request answered and the bytes of every upload, counted as
  they happen in this process;
- the database (edcrm.metrics.database): the job ledger and the lead imports, read at each scrape, so
  every web process answers the same;
- jobs (edcrm.metrics.jobs): in the embedded mode only, the `dramatiq_*` metrics of the in-process
  workers (`JobMetrics`), the same names and labels as Dramatiq's Prometheus middleware exposes from
  `dramatiq edcrm.actors` workers;
- a scrape (edcrm.metrics.scrape) puts them together, in one process or across gunicorn's.
"""

from __future__ import annotations

from .database import DatabaseCollector
from .jobs import JobMetrics
from .requests import count_upload, init_app
from .scrape import CONTENT_TYPE, MULTIPROCESS_DIR, render

__all__ = [
    "CONTENT_TYPE",
    "MULTIPROCESS_DIR",
    "DatabaseCollector",
    "JobMetrics",
    "count_upload",
    "init_app",
    "render",
]
