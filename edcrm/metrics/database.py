"""Database metrics, read at each scrape so that every web process answers the same:
`edcrm_jobs{queue,state}`, `edcrm_lead_imports{status}`, `edcrm_import_rows_total{outcome}` and
`edcrm_metrics_database_up`."""

from __future__ import annotations

import logging

import sqlalchemy as sa
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from sqlalchemy.exc import SQLAlchemyError

from ..config import QUEUES
from ..extensions import db
from ..models import ImportStatus, Job, JobState, LeadImport

log = logging.getLogger(__name__)


class DatabaseCollector:
    """The job ledger and the lead imports, read at scrape time through the app's session.

    Two cheap queries: the jobs grouped by (queue, state), which the `ix_jobs_queue_state` index answers,
    and sums over `lead_imports` (one row per uploaded file). A database that does not answer leaves
    `edcrm_metrics_database_up` at 0 and the rest of the scrape intact.
    """

    def describe(self):
        return []  # registering the collector must not query anything

    def collect(self):
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
