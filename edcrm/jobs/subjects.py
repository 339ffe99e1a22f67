"""What a job serves: the import or recording upload it works on, stored on its ledger row.

An actor says so when it is declared (`@actor(..., serves=IMPORT)`: its first argument is the record's
id), or a sender does (edcrm.jobs.send's `serves`); the ledger middleware writes it on the job's row when
the job is first sent, and an `on_retry_exhausted` callback serves what the message it is about served.
The jobs pages link a job to its record with subject_of().

The package that owns a kind of record registers what operators' actions mean for it (register()):
what becomes of the record when its job is cancelled (a recording upload must not stay `processing`
with no job left to finish it), and why a retry of its job cannot succeed (an import whose file was
deleted can only end "already cancelled"), so that no page offers a retry that cannot work.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..models import Job

IMPORT = "import"
RECORDING_UPLOAD = "recording_upload"


@dataclasses.dataclass(frozen=True)
class Subject:
    kind: str  # IMPORT or RECORDING_UPLOAD
    id: int | str


@dataclasses.dataclass(frozen=True)
class Rules:
    #: The job was cancelled by an operator: end the record (in the caller's session, which commits).
    cancelled: Callable[[Subject], None] | None = None
    #: Why a retry of the job could only end cancelled, in plain words; None if it may work.
    retry_refusal: Callable[[Subject], str | None] | None = None


#: kind -> its rules; filled by the actor modules of the packages that own the records.
RULES: dict[str, Rules] = {}


def register(kind: str, rules: Rules) -> None:
    RULES[kind] = rules


def subject_of(job: Job) -> Subject | None:
    """The record job works on, if it serves one."""
    if job.serves_kind is None or job.serves_id is None:
        return None
    return Subject(job.serves_kind, job.serves_id)


def job_cancelled(job: Job) -> None:
    """An operator cancelled job: its record ends too (uncommitted: the cancel commits both at once)."""
    subject = subject_of(job)
    rules = RULES.get(subject.kind) if subject else None
    if subject is not None and rules is not None and rules.cancelled is not None:
        rules.cancelled(subject)


def retry_refusal(job: Job) -> str | None:
    """Why retrying job cannot succeed (its record is gone or can never be worked on again), or None."""
    subject = subject_of(job)
    rules = RULES.get(subject.kind) if subject else None
    if subject is None or rules is None or rules.retry_refusal is None:
        return None
    return rules.retry_refusal(subject)
