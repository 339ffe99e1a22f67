"""Fixtures of the page tests."""

from __future__ import annotations

import pytest

from edcrm import create_app
from edcrm.extensions import db
from edcrm.models import Branch, Role
from tests.support.people import make_user


@pytest.fixture
def csrf_app(tmp_path, monkeypatch, new_sqlite_database):
    """The app as it runs for real: forms need their CSRF token."""
    monkeypatch.setenv("EDCRM_INSTANCE_PATH", str(tmp_path / "csrf-instance"))
    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "test-secret",
            "SQLALCHEMY_DATABASE_URI": new_sqlite_database(),
            "STORAGE_URL": (tmp_path / "storage").as_uri(),
            "WTF_CSRF_ENABLED": True,
        }
    )
    with app.app_context():
        make_user(Branch.get_or_create("Kochi"), Role.TELECALLER, email="caller@kochi.test")
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
