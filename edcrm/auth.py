"""Authentication: session logins for pages (Flask-Login), bearer tokens for /api/."""

from __future__ import annotations

from flask import Flask

from .extensions import db, login_manager
from .models import User


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    return db.session.get(User, int(user_id))


def init_app(app: Flask) -> None:
    login_manager.init_app(app)
