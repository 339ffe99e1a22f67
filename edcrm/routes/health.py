"""GET /healthz: can this process reach the database, the broker and the storage?"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from flask import Blueprint, jsonify

from ..extensions import db
from ..jobs import broker
from ..storage import get_storage
from .api.schemas.meta import Health
from .api.spec import operation

bp = Blueprint("health", __name__)
log = logging.getLogger(__name__)


def _check_database() -> None:
    db.session.execute(sa.text("SELECT 1"))


def _check_storage() -> None:
    get_storage().check()


CHECKS = {"database": _check_database, "broker": broker.ping, "storage": _check_storage}


@bp.get("/healthz")
@operation(
    "health",
    "meta",
    public=True,
    HTTP_200=(Health, "Everything answers."),
    HTTP_503=(Health, "Something is down: its key says `down: ErrorType`."),
)
def healthz():
    """Can this process reach the database, the broker and the storage?"""
    report, healthy = {}, True
    for name, check in CHECKS.items():
        try:
            check()
            report[name] = "ok"
        except Exception as exc:  # a health check reports every failure, whatever its type
            log.warning("health check %s failed: %s", name, exc)
            report[name] = f"down: {type(exc).__name__}"
            healthy = False
    return jsonify(report), 200 if healthy else 503
