"""Access rules: what a signed-in user may see and touch, for pages and API alike.

Who the user is comes first (edcrm.auth: a session or a bearer token, with the role a route needs); then
a route reaches records through a scope helper (`lead_for`, `call_log_for`, ...) that answers 404 for
an unknown record and 403 for one that is not the user's, and lists them through a `visible_*` filter.
One rule decides, for every kind of record:

- an admin may touch what belongs to their own branch;
- a telecaller may touch only what is theirs (assigned to them, logged by them) in their branch.

To scope a new kind of record, add `thing_for(user, thing_id)` built on `get_or_404` and `authorize`
and, when it is listed, a `visible_things(user)` filter built on `branch_filter`, next to the ones below.

The helpers raise werkzeug HTTP exceptions, which edcrm.routes.errors answers as JSON under /api/ and
as the error page elsewhere, so pages and API share them.
"""

from __future__ import annotations

import re
from typing import TypeVar

import sqlalchemy as sa
from werkzeug.exceptions import Forbidden, NotFound

from .extensions import db
from .models import CallLog, Job, Lead, LeadImport, Recording, RecordingUpload, Role, User

ModelT = TypeVar("ModelT")

UPLOAD_ID = re.compile(r"[0-9a-f]{32}")

#: Ids are INTEGER columns: a bigger id cannot exist, and PostgreSQL refuses to even compare one.
MAX_ID = 2**31 - 1


# -- the rules ---------------------------------------------------------------------------------------------


def require_role(user: User, roles: frozenset[Role]) -> None:
    """403 unless user has one of roles (no roles: any signed-in user)."""
    if roles and user.role not in roles:
        needed = " or ".join(sorted(role.value for role in roles))
        raise Forbidden(f"This needs the {needed} role.")


def may_access(user: User, *, branch_id: int, owner_id: int | None = None) -> bool:
    """The rule: an admin of the record's branch, or the telecaller who owns it, in that branch.

    owner_id None means the record has no telecaller owner: only the branch's admin may touch it.
    """
    if user.branch_id != branch_id:
        return False
    return user.is_admin or (owner_id is not None and owner_id == user.id)


def authorize(user: User, what: str, *, branch_id: int, owner_id: int | None = None) -> None:
    """403 unless may_access()."""
    if not may_access(user, branch_id=branch_id, owner_id=owner_id):
        raise Forbidden(f"This {what} is not yours.")


def branch_filter(user: User, branch_column, owner_column=None) -> sa.ColumnElement[bool]:
    """may_access() as a WHERE clause, for lists."""
    clause = branch_column == user.branch_id
    if user.is_admin:
        return clause
    if owner_column is None:
        return sa.false()
    return sa.and_(clause, owner_column == user.id)


def may_see_import(user: User, lead_import: LeadImport) -> bool:
    """A lead import is its branch's admins' only."""
    return may_access(user, branch_id=lead_import.branch_id)


def may_see_upload(user: User, upload: RecordingUpload) -> bool:
    """A recording upload is the telecaller's who opened it, and their branch's admins'."""
    # By its telecaller's branch, not its call log's: an upload outlives a deleted call log.
    owner = db.session.get(User, upload.telecaller_id)
    return owner is not None and may_access(user, branch_id=owner.branch_id, owner_id=upload.telecaller_id)


# -- records, scoped to the user ---------------------------------------------------------------------------


def get_or_404(model: type[ModelT], obj_id: object, what: str) -> ModelT:
    """The record with this id, or 404."""
    if isinstance(obj_id, bool) or not isinstance(obj_id, int) or not 0 < obj_id <= MAX_ID:
        raise NotFound(f"No {what} {obj_id}.")
    obj = db.session.get(model, obj_id)
    if obj is None:
        raise NotFound(f"No {what} {obj_id}.")
    return obj


def visible_leads(user: User) -> sa.ColumnElement[bool]:
    """The leads user sees: their branch's (admin), those assigned to them (telecaller)."""
    return branch_filter(user, Lead.branch_id, Lead.telecaller_id)


def visible_users(user: User) -> sa.ColumnElement[bool]:
    """The users user sees: their branch's (admin), themselves (telecaller)."""
    return branch_filter(user, User.branch_id, User.id)


def visible_call_logs(user: User) -> sa.ColumnElement[bool]:
    """The call logs user sees, of a query joined to their leads: the branch's (admin), their own
    (telecaller)."""
    return branch_filter(user, Lead.branch_id, CallLog.telecaller_id)


def lead_for(user: User, lead_id: object) -> Lead:
    lead = get_or_404(Lead, lead_id, "lead")
    authorize(user, "lead", branch_id=lead.branch_id, owner_id=lead.telecaller_id)
    return lead


def call_log_for(user: User, call_log_id: object) -> CallLog:
    """A call log, for the telecaller who logged it or an admin of its lead's branch."""
    call_log = get_or_404(CallLog, call_log_id, "call log")
    authorize(user, "call log", branch_id=call_log.lead.branch_id, owner_id=call_log.telecaller_id)
    return call_log


def recording_for(user: User, recording_id: object) -> Recording:
    """A recording, for whoever may see its call log (the telecaller who logged it, the branch's admin)."""
    recording = get_or_404(Recording, recording_id, "recording")
    call_log_for(user, recording.call_log_id)
    return recording


def visible_imports(user: User) -> sa.ColumnElement[bool]:
    """The lead imports user sees: their branch's, for an admin; none for a telecaller."""
    return branch_filter(user, LeadImport.branch_id)


def import_for(user: User, import_id: object) -> LeadImport:
    """A lead import, for an admin of its branch only."""
    lead_import = get_or_404(LeadImport, import_id, "import")
    if not may_see_import(user, lead_import):
        raise Forbidden("This import is not yours.")
    return lead_import


def upload_for(user: User, upload_id: object) -> RecordingUpload:
    """A recording upload session, for the telecaller who opened it (or an admin of its branch).

    Upload ids are opaque tokens (32 hex digits): anything else, "../x" included, is simply unknown.
    """
    if not isinstance(upload_id, str) or not UPLOAD_ID.fullmatch(upload_id):
        raise NotFound("No such upload.")
    upload = db.session.get(RecordingUpload, upload_id)
    if upload is None:
        raise NotFound("No such upload.")
    if not may_see_upload(user, upload):
        raise Forbidden("This upload is not yours.")
    return upload


def visible_jobs(user: User) -> sa.ColumnElement[bool]:
    """The jobs user sees: for an admin, their branch's and the system's (branch_id NULL: the pruners,
    a ping); none for a telecaller."""
    if not user.is_admin:
        return sa.false()
    return sa.or_(Job.branch_id == user.branch_id, Job.branch_id.is_(None))


def job_for(user: User, job_id: object) -> Job:
    """A job (by its Dramatiq message id), for an admin of its branch, or any admin for a system job."""
    if not isinstance(job_id, str) or not 0 < len(job_id) <= 64:
        raise NotFound("No such job.")
    job = db.session.get(Job, job_id)
    if job is None:
        raise NotFound("No such job.")
    if job.branch_id is None:
        require_role(user, frozenset({Role.ADMIN}))
    else:
        authorize(user, "job", branch_id=job.branch_id)
    return job


def may_reassign(user: User, lead: Lead) -> bool:
    """Only an admin of the lead's branch gives a lead to another telecaller."""
    return user.is_admin and user.branch_id == lead.branch_id


def assignable_telecaller(lead: Lead, telecaller_id: int) -> User | None:
    """The user a lead may be given to: an active telecaller of the lead's branch, else None."""
    if not 0 < telecaller_id <= MAX_ID:
        return None
    candidate = db.session.get(User, telecaller_id)
    if candidate is None or not candidate.active or candidate.role is not Role.TELECALLER:
        return None
    return candidate if candidate.branch_id == lead.branch_id else None
