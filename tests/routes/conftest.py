"""Fixtures of the route tests: two branches and their people, signing in with PASSWORD (a module
that needs other people declares a `people` of its own)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from edcrm.extensions import db
from edcrm.models import Branch, Role
from tests.support.people import make_user


@pytest.fixture
def people(app):
    """Kochi: an admin, two active telecallers and a deactivated one; Thrissur: an admin, a telecaller."""
    with app.app_context():
        kochi, thrissur = Branch(name="Kochi"), Branch(name="Thrissur")
        db.session.add_all([kochi, thrissur])
        db.session.commit()
        admin = make_user(kochi, Role.ADMIN, email="admin@kochi.test")
        callers = [make_user(kochi, Role.TELECALLER, email=f"caller{n}@kochi.test") for n in (1, 2)]
        idle = make_user(kochi, Role.TELECALLER, email="idle@kochi.test", active=False)
        other_admin = make_user(thrissur, Role.ADMIN, email="admin@thrissur.test")
        stranger = make_user(thrissur, Role.TELECALLER, email="caller@thrissur.test")
        # (id, email) pairs: the users themselves would be detached once this context ends.
        return SimpleNamespace(
            admin=(admin.id, admin.email),
            callers=[(c.id, c.email) for c in callers],
            idle=(idle.id, idle.email),
            other_admin=(other_admin.id, other_admin.email),
            stranger=(stranger.id, stranger.email),
        )
