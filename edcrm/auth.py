"""Authentication: who is asking. Session logins for pages (Flask-Login), bearer tokens for /api/.

What a signed-in user may do is decided in edcrm.permissions, not here.
"""

from __future__ import annotations

import functools
import re
from datetime import timedelta

import sqlalchemy as sa
from flask import Flask
from werkzeug.security import check_password_hash, generate_password_hash

from .extensions import db, login_manager
from .models import ApiToken, User
from .models.types import utcnow

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
    can revoke it (sign out), and used to keep last_used_at."""
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


def init_app(app: Flask) -> None:
    login_manager.init_app(app)
    login_manager.login_view = "web.login"
    login_manager.login_message = "Please sign in to see that page."
    login_manager.login_message_category = "info"
