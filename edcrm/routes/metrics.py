"""GET /metrics: Prometheus' scrape of the web (see edcrm.metrics), for METRICS_TOKEN only: its series are
the whole deployment's, every branch's (see edcrm.auth.metrics_auth)."""

from __future__ import annotations

from flask import Blueprint, Response

from .. import metrics as web_metrics
from ..auth import metrics_auth
from ..extensions import csrf
from .api.schemas.base import Error
from .api.spec import operation

bp = Blueprint("metrics", __name__)
csrf.exempt(bp)  # GET only, with a bearer token


@bp.get("/metrics")
@metrics_auth
@operation(
    "metrics",
    "meta",
    HTTP_200=(None, "The metrics."),
    HTTP_401=(Error, "No token, or not METRICS_TOKEN, or METRICS_TOKEN is unset (`unauthorized`)."),
    HTTP_403=(Error, "A user's API token, an admin's included (`forbidden`)."),
)
def metrics():
    """Prometheus metrics of the web (for METRICS_TOKEN only)

    The Prometheus text format (0.0.4): HTTP requests by method, Flask endpoint and status
    (`edcrm_http_requests_total`, `edcrm_http_request_duration_seconds`), upload bytes by kind
    (`edcrm_upload_bytes_total`), and, read from the database at each scrape, jobs by queue and state
    (`edcrm_jobs`), lead imports by status (`edcrm_lead_imports`) and imported rows by outcome
    (`edcrm_import_rows_total`). The bearer token is the `METRICS_TOKEN` setting, the only one that opens
    it: the series are the whole deployment's, every branch's (unset, `/metrics` is closed). An addition
    to the contract; see the README, Metrics."""
    body, content_type = web_metrics.render()
    return Response(body, content_type=content_type, headers={"Cache-Control": "no-store"})
