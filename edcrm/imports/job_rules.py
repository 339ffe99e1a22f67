"""Why an import's job cannot be retried (edcrm.jobs.subjects): a failed or cancelled import is over
for good (its file deleted), so a retry of its job could only end "already cancelled"."""

from __future__ import annotations

from ..extensions import db
from ..jobs.subjects import Subject
from ..models import ImportStatus, LeadImport


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
