"""Authentication: who is asking. Session logins for pages (Flask-Login), bearer tokens for /api/, the
operators' METRICS_TOKEN for /metrics.

A route declares who may call it with `@api_auth(...)` (a bearer token) or `@page_auth(...)` (the
session), naming the roles it is for; what the signed-in user may then see and touch is decided by the
rules of edcrm.permissions, not here.
"""

from __future__ import annotations

import functools
import hmac
import re
from collections.abc import Callable, Iterable
from datetime import timedelta

import sqlalchemy as sa
from flask import Flask, Response, current_app, g, request
from flask_login import current_user
from werkzeug.exceptions import Forbidden, Unauthorized
from werkzeug.security import check_password_hash, generate_password_hash

from .extensions import db, login_manager
from .models import ApiToken, Role, User
from .models.types import utcnow
from .permissions import require_role

#: last_used_at is a hint for operators ("is this token still in use?"), not an audit log: writing it
#: on every request would turn each read into a write, so it is refreshed at most this often.
LAST_USED_RESOLUTION = timedelta(minutes=1)

#: users.id is an INTEGER column.
MAX_USER_ID = 2**31 - 1


#: What User.get_id() puts in a session or remember-me cookie: the user's id and session generation.
SESSION_ID = re.compile(r"([0-9]{1,10}):([0-9]{1,10})")


@login_manager.user_loader
def load_user(session_id: str) -> User | None:
    """The user of a session or remember-me cookie, if it is still theirs: a deactivated user, or one who
    signed out since the cookie was issued (User.end_sessions), is signed out of it."""
    match = SESSION_ID.fullmatch(session_id)
    if match is None:  # a cookie from before session generations, or another app's on the same key
        return None
    user_id, generation = int(match[1]), int(match[2])
    user = db.session.get(User, user_id) if user_id <= MAX_USER_ID else None
    if user is None or not user.active or user.session_generation != generation:
        return None
    return user


@functools.cache
def _dummy_hash() -> str:
    return generate_password_hash("never-a-password")


def authenticate_password(email: str, password: str) -> User | None:
    """The active user with this email and password, or None (the caller does not learn which failed)."""
    user = User.by_email(email)
    if user is None:
        # Hash anyway, so an unknown email takes as long to refuse as a wrong password.
        check_password_hash(_dummy_hash(), password)
        return None
    if not user.check_password(password) or not user.active:
        return None
    return user


def parse_bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer TOKEN` header, or None."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def authenticate_token(plaintext: str) -> ApiToken | None:
    """The unrevoked token of an active user, or None; returned (not just its user) so that the caller
    can revoke it (sign out). Finding it records its use (last_used_at, to the minute)."""
    token = ApiToken.find_active(plaintext)
    if token is not None:
        _touch(token)
    return token


def _touch(token: ApiToken) -> None:
    """Record that token was used, unless that was recorded less than a minute ago."""
    now = utcnow()
    stale = now - LAST_USED_RESOLUTION
    if token.last_used_at is not None and token.last_used_at > stale:
        return  # the common case: no write at all
    # Conditional, so that concurrent requests with one token write it once and never move it backwards.
    db.session.execute(
        sa.update(ApiToken)
        .where(ApiToken.id == token.id)
        .where(sa.or_(ApiToken.last_used_at.is_(None), ApiToken.last_used_at <= stale))
        .values(last_used_at=now),
        execution_options={"synchronize_session": False},
    )
    db.session.commit()


# -- the routes' decorators ---------------------------------------------------------------------------------


def _role_set(roles: Iterable[Role | str]) -> frozenset[Role]:
    return frozenset(Role(role) for role in roles)


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


def init_app(app: Flask) -> None:
    login_manager.init_app(app)
    login_manager.login_view = "web.login"
    login_manager.login_message = "Please sign in to see that page."
    login_manager.login_message_category = "info"
