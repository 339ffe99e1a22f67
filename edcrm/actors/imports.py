"""The lead-import actors, on queue `csv_import`.

`import_leads(import_id)` runs the pipeline (edcrm.imports.lifecycle); it is safe to run again after a
retry or a redelivery, which resume after the last committed batch. When its retries are exhausted,
Dramatiq sends `import_leads_exhausted`, which marks the import failed and only then deletes the file:
until that moment a retry may still need it.
"""

from __future__ import annotations

from ..imports import job_rules
from ..jobs import actor, last_error
from ..jobs.subjects import IMPORT, Rules, register

# The pipeline (phonenumbers, psycopg's COPY…: 11 MB) is imported when an import runs, not where the
# actor is only declared to be sent (the web process) or where this queue is not worked.

#: A million rows take well under a minute on PostgreSQL; a slow storage or database gets hours.
IMPORT_TIME_LIMIT_MS = 6 * 60 * 60 * 1000

register(IMPORT, Rules(cancelled=job_rules.job_cancelled, retry_refusal=job_rules.retry_refusal))


@actor(queue_name="csv_import", time_limit=60 * 1000)
def import_leads_exhausted(message: dict, retry_info: dict) -> None:
    """The last attempt of an import_leads message failed: the import is failed, its file deleted."""
    from ..imports import lifecycle  # 11 MB, 145 modules (measured) a web process goes without

    lifecycle.fail_import(message["args"][0], last_error(message))


@actor(
    queue_name="csv_import",
    time_limit=IMPORT_TIME_LIMIT_MS,
    on_retry_exhausted=import_leads_exhausted.actor_name,
    actor_name=job_rules.IMPORT_LEADS,
    serves=IMPORT,
)
def import_leads(import_id: int) -> None:
    """Import the CSV of LeadImport import_id into leads of its branch (see edcrm.imports.lifecycle)."""
    from ..imports import lifecycle  # 11 MB, 145 modules (measured) a web process goes without

    lifecycle.run_import(import_id)
