"""What operators' actions on an import's job mean for the import (edcrm.jobs.subjects).

A cancelled job ends its import `cancelled` (what earlier batches committed stays), and its file is
deleted once that has committed. A failed or cancelled import is over for good (its file deleted),
so a retry of its job could only end "already cancelled": the retry is refused, saying why.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa

from ..extensions import db
from ..jobs.subjects import Subject
from ..models import ImportStatus, LeadImport
from ..models.types import utcnow
from ..storage import get_storage

log = logging.getLogger(__name__)

#: The actor that runs an import (edcrm.actors.imports), by the name this package sends it by.
IMPORT_LEADS = "import_leads"

#: The import's error once an operator cancelled its job.
CANCELLED_BY_OPERATOR = "An administrator cancelled the import's job; rows already imported stay."


def job_cancelled(subject: Subject) -> None:
    """The import ends `cancelled` in the cancel's transaction; its file goes after that commits."""
    lead_import = db.session.get(LeadImport, subject.id) if isinstance(subject.id, int) else None
    if lead_import is None or lead_import.status not in (ImportStatus.QUEUED, ImportStatus.RUNNING):
        return
    lead_import.status = ImportStatus.CANCELLED
    lead_import.error = CANCELLED_BY_OPERATOR
    lead_import.finished_at = utcnow()
    import_id = lead_import.id
    sa.event.listen(db.session(), "after_commit", lambda _session: _delete_file_after(import_id), once=True)


def _delete_file_after(import_id: int) -> None:
    """Runs after the commit, in a session of its own (the committing one can't be used from here)."""
    with sa.orm.Session(db.engine) as session:
        lead_import = session.get(LeadImport, import_id)
        if lead_import is None or not lead_import.storage_key:
            return
        try:
            get_storage().delete(lead_import.storage_key)
        except Exception:  # an orphan file is only wasted space; the cancel stands
            log.exception("could not delete the file of cancelled import %s", import_id)
            return
        lead_import.storage_key = None
        session.commit()


def retry_refusal(subject: Subject) -> str | None:
    lead_import = db.session.get(LeadImport, subject.id) if isinstance(subject.id, int) else None
    if lead_import is None:
        return "The import no longer exists, so there is nothing to retry."
    if lead_import.status in (ImportStatus.FAILED, ImportStatus.CANCELLED):
        return (
            f"The import is {lead_import.status.value} and its file was deleted, so a retry could only "
            "end cancelled; upload the file again as a new import."
        )
    return None
