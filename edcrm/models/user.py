"""Users (admins and telecallers of a branch) and their API tokens."""

from __future__ import annotations

import enum
import hashlib
import secrets
from datetime import datetime

import sqlalchemy as sa
from flask_login import UserMixin
from sqlalchemy.orm import Mapped, contains_eager, mapped_column, relationship
from werkzeug.security import check_password_hash, generate_password_hash

from ..extensions import Model, db
from .branch import Branch
from .types import UTCDateTime, str_enum, utcnow


class Role(enum.StrEnum):
    ADMIN = "admin"
    TELECALLER = "telecaller"


class User(UserMixin, Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(sa.String(256))
    role: Mapped[Role] = mapped_column(str_enum(Role, "user_role"))
    active: Mapped[bool] = mapped_column(default=True, server_default=sa.true())
    branch_id: Mapped[int] = mapped_column(sa.ForeignKey("branches.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: Every session and remember-me cookie carries the value it was issued under (get_id) and opens
    #: nothing once it has moved on: end_sessions() moves it (signing out, deactivation, a new password).
    session_generation: Mapped[int] = mapped_column(default=0, server_default="0")

    branch: Mapped[Branch] = relationship()

    @staticmethod
    def normalize_email(email: str) -> str:
        return email.strip().lower()

    @classmethod
    def by_email(cls, email: str) -> User | None:
        stmt = sa.select(cls).filter_by(email=cls.normalize_email(email))
        return db.session.execute(stmt).scalar_one_or_none()

    def set_password(self, password: str) -> None:
        """Set a new password; the sessions opened with the old one end."""
        self.password_hash = generate_password_hash(password)
        self.end_sessions()

    def get_id(self) -> str:
        """Flask-Login: what the session and the remember-me cookie keep, checked by auth.load_user."""
        return f"{self.id}:{self.session_generation}"

    def end_sessions(self) -> None:
        """Sign the user out of every browser: the cookies issued so far stop opening pages (API tokens
        are revoked on their own)."""
        if not sa.inspect(self).has_identity:
            return  # not in the database yet: no cookie names this user
        # In SQL, so that two sign-outs at once both move it.
        self.session_generation = User.session_generation + 1

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)

    @property
    def is_active(self) -> bool:  # Flask-Login: an inactive user cannot sign in.
        return self.active

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN

    def __repr__(self) -> str:
        return f"<User {self.id} {self.email} {self.role.value}>"


@sa.event.listens_for(User.active, "set")
def _end_sessions_on_deactivation(user: User, active: bool, _old, _initiator) -> None:
    if not active:
        user.end_sessions()


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ApiToken(Model):
    """A bearer token; only its SHA-256 is stored, so a leaked database leaks no working token."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    name: Mapped[str] = mapped_column(sa.String(80), default="api")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship()

    @classmethod
    def issue(cls, user: User, name: str = "api") -> str:
        """Create a token for user and return its plaintext (shown once, never stored)."""
        plaintext = secrets.token_urlsafe(32)
        db.session.add(cls(user=user, token_hash=_digest(plaintext), name=name))
        return plaintext

    @classmethod
    def find_active(cls, plaintext: str) -> ApiToken | None:
        """The unrevoked token of an active user, with its user loaded, or None."""
        stmt = (
            sa.select(cls)
            .join(cls.user)
            .options(contains_eager(cls.user))
            .where(cls.token_hash == _digest(plaintext), cls.revoked_at.is_(None), User.active.is_(True))
        )
        return db.session.execute(stmt).scalar_one_or_none()

    def revoke(self) -> None:
        self.revoked_at = utcnow()
