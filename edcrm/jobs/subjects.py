"""What a job serves: the import or recording upload its actor works on, named by its first argument.

An actor says so when it is declared (`@actor(..., serves=IMPORT)`); the jobs pages link a job to its
record with subject_of(). An `on_retry_exhausted` callback serves what the message it is about served.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..models import Job

IMPORT = "import"
RECORDING_UPLOAD = "recording_upload"

#: actor name -> the kind of record its first argument is the id of; filled by edcrm.jobs.actor.
SERVES: dict[str, str] = {}


@dataclasses.dataclass(frozen=True)
class Subject:
    kind: str  # IMPORT or RECORDING_UPLOAD
    id: int | str


def subject_of(job: Job) -> Subject | None:
    """The record job works on, if its actor serves one."""
    from .. import actors  # noqa: F401  (declares every actor, which fills SERVES)

    actor, args = job.actor, job.args
    if args and isinstance(args[0], dict):  # a callback: its first argument is the message it is about
        actor, args = args[0].get("actor_name"), args[0].get("args") or []
    kind = SERVES.get(actor)
    if kind is None or not args or not isinstance(args[0], int | str) or isinstance(args[0], bool):
        return None
    return Subject(kind, args[0])
