"""Housekeeping actors: the periodic pruners (jobs, stale upload sessions), and a ping that checks the
job pipeline end to end."""

from __future__ import annotations

import logging

from flask import current_app
from periodiq import cron

from .. import spool
from ..jobs import actor, ledger
from ..models import IdempotencyKey
from ..recordings.pruning import prune_stale, prune_strays

log = logging.getLogger(__name__)


@actor(queue_name="default", periodic=cron("17 * * * *"), time_limit=30 * 60 * 1000)
def prune_jobs() -> None:
    """Delete finished ledger rows past their retention, and expired idempotency keys (hourly, from the
    scheduler)."""
    deleted = ledger.prune(
        retention_days=current_app.config["JOB_RETENTION_DAYS"],
        failed_retention_days=current_app.config["FAILED_JOB_RETENTION_DAYS"],
    )
    log.info("pruned %d finished job(s)", deleted)
    # The Idempotency-Key answers past IDEMPOTENCY_KEY_HOURS: their keys may be sent again as new requests.
    log.info("pruned %d expired idempotency key(s)", IdempotencyKey.prune())


@actor(queue_name="default", periodic=cron("47 * * * *"), time_limit=30 * 60 * 1000)
def prune_upload_sessions() -> None:
    """Remove recording upload sessions idle past UPLOAD_SESSION_TTL_HOURS, with their chunks, the
    chunks left in finished uploads, and the spools of processes that are gone (hourly)."""
    ttl_hours = current_app.config["UPLOAD_SESSION_TTL_HOURS"]
    removed = prune_stale(ttl_hours)
    cleaned = prune_strays(ttl_hours)
    swept = spool.sweep()
    log.info(
        "pruned %d stale upload session(s), the stray chunks of %d upload(s), %d spool(s)",
        removed,
        cleaned,
        swept,
    )


class PingFailure(RuntimeError):
    """Raised on purpose by ping(fail=True)."""


@actor(queue_name="default", time_limit=60 * 1000)
def ping(fail: bool = False) -> None:
    """Do nothing, or fail on purpose: `flask edcrm jobs ping [--fail]` lets an operator see a job go
    through the workers to `succeeded`, or through its retries to `failed`, on a live deployment."""
    if fail:
        raise PingFailure("ping asked to fail")
