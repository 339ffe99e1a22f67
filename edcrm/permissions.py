"""Who may do what: roles and branch scopes, in one place that every route uses.

A route declares who may call it with `@api_auth(...)` (bearer token) or `@page_auth(...)` (session),
then reaches records through a scope helper (`lead_for`, `call_log_for`, ...) that answers 404 for an
unknown record and 403 for one that is not the user's. One rule decides, for every kind of record:

- an admin may touch what belongs to their own branch;
- a telecaller may touch only what is theirs (assigned to them, logged by them) in their branch.

To scope a new kind of record, add `thing_for(user, thing_id)` built on `get_or_404` and `authorize`
and, when it is listed, a `visible_things(user)` filter built on `branch_filter`, next to the ones below.

The helpers raise werkzeug HTTP exceptions, which edcrm.routes.errors answers as JSON under /api/ and
as the error page elsewhere, so pages and API share them.
"""

from __future__ import annotations

import functools
import hmac
import re
from collections.abc import Callable, Iterable
from typing import TypeVar

import sqlalchemy as sa
from flask import Response, current_app, g, request
from flask_login import current_user
from werkzeug.exceptions import Forbidden, NotFound, Unauthorized

from .auth import authenticate_token, parse_bearer
from .extensions import db, login_manager
from .models import CallLog, Job, Lead, LeadImport, Recording, RecordingUpload, Role, User

ModelT = TypeVar("ModelT")

UPLOAD_ID = re.compile(r"[0-9a-f]{32}")

#: Ids are INTEGER columns: a bigger id cannot exist, and PostgreSQL refuses to even compare one.
MAX_ID = 2**31 - 1


# -- who is asking -----------------------------------------------------------------------------------------


def _role_set(roles: Iterable[Role | str]) -> frozenset[Role]:
    return frozenset(Role(role) for role in roles)


def require_role(user: User, roles: frozenset[Role]) -> None:
    """403 unless user has one of roles (no roles: any signed-in user)."""
    if roles and user.role not in roles:
        needed = " or ".join(sorted(role.value for role in roles))
        raise Forbidden(f"This needs the {needed} role.")


def api_auth(*roles: Role | str) -> Callable:
    """Decorate an /api/ route: a bearer token of an active user with one of roles (none: any role).

    401 without a token or with a bad, revoked or deactivated user's one; 403 for another role.
    Sets g.user and g.api_token.
    """
    allowed = _role_set(roles)

    def decorator(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapped(*args, **kwargs):
            plaintext = parse_bearer(request.headers.get("Authorization"))
            if plaintext is None:
                g.bearer_challenge = True
                raise Unauthorized("Send an Authorization: Bearer TOKEN header.")
            token = authenticate_token(plaintext)
            if token is None:
                g.bearer_challenge = True
                raise Unauthorized("The token is unknown or revoked, or its user is deactivated.")
            g.user, g.api_token = token.user, token
            require_role(g.user, allowed)
            return view(*args, **kwargs)

        return wrapped

    return decorator


def metrics_auth(view: Callable) -> Callable:
    """Decorate /metrics: `Authorization: Bearer METRICS_TOKEN`, the operators' (Prometheus') token only.

    Its series are the whole deployment's (every branch's jobs and imports, every request), so no user's
    token opens it, an admin's included: 403 for a user's token, 401 without a token or with any other
    one. While METRICS_TOKEN is unset, nothing opens it.
    """

    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        plaintext = parse_bearer(request.headers.get("Authorization"))
        expected = current_app.config.get("METRICS_TOKEN")
        # In constant time: how much of the token a guess got right must not show in the timing.
        if plaintext is not None and expected and hmac.compare_digest(plaintext.encode(), expected.encode()):
            return view(*args, **kwargs)
        g.bearer_challenge = True
        if plaintext is not None and authenticate_token(plaintext) is not None:
            raise Forbidden("/metrics is for the operators' METRICS_TOKEN, not a user's token.")
        if not expected:
            raise Unauthorized("/metrics is closed: METRICS_TOKEN is not set.")
        raise Unauthorized("Send an Authorization: Bearer METRICS_TOKEN header.")

    return wrapped


def bearer_challenge(response: Response) -> Response:
    """RFC 6750: a 401 from a bearer-protected route (api_auth, metrics_auth) names the scheme it wants.
    Registered for the whole app (edcrm.routes.init_app)."""
    if response.status_code == 401 and g.get("bearer_challenge"):
        response.headers["WWW-Authenticate"] = 'Bearer realm="edcrm"'
    return response


def page_auth(*roles: Role | str) -> Callable:
    """Decorate a page: a signed-in user with one of roles (none: any role).

    Anonymous visitors are sent to the login page (and back afterwards); another role gets the 403 page.
    Sets g.user.
    """
    allowed = _role_set(roles)

    def decorator(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapped(*args, **kwargs):
            if not current_user.is_authenticated:
                return login_manager.unauthorized()
            g.user = current_user._get_current_object()
            require_role(g.user, allowed)
            return view(*args, **kwargs)

        return wrapped

    return decorator


# -- what they may touch -----------------------------------------------------------------------------------


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
    authorize(user, "import", branch_id=lead_import.branch_id)
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
    # By its telecaller's branch, not its call log's: an upload outlives a deleted call log.
    owner = db.session.get(User, upload.telecaller_id)
    authorize(user, "upload", branch_id=owner.branch_id, owner_id=upload.telecaller_id)
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
