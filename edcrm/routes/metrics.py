"""GET /metrics: Prometheus' scrape of the web (see edcrm.metrics), for METRICS_TOKEN only: its series are
the whole deployment's, every branch's (see edcrm.auth.metrics_auth)."""

from __future__ import annotations

from flask import Blueprint, Response

from .. import metrics as web_metrics
from ..auth import metrics_auth
from ..extensions import csrf

bp = Blueprint("metrics", __name__)
csrf.exempt(bp)  # GET only, with a bearer token


@bp.get("/metrics")
@metrics_auth
def metrics():
    body, content_type = web_metrics.render()
    return Response(body, content_type=content_type, headers={"Cache-Control": "no-store"})
