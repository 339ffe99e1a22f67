"""The people of the tests: users with a password, API tokens, and signing in through the login form.

Every test user's password is hashed once per session with the production hash (werkzeug's scrypt), then
the stored hash is shared: a hash costs a tenth of a second, and the suite makes hundreds of users.
"""

from __future__ import annotations

import functools
import uuid

from werkzeug.security import generate_password_hash

from edcrm.extensions import db
from edcrm.models import ApiToken, Branch, Role, User

PASSWORD = "secret-password"


@functools.cache
def password_hash(password: str) -> str:
    """The stored hash of password, made once per session (checking it still runs the real hash)."""
    return generate_password_hash(password)


def make_user(
    branch: Branch,
    role: Role = Role.TELECALLER,
    *,
    email: str | None = None,
    password: str = PASSWORD,
    active: bool = True,
) -> User:
    """A committed user of branch who signs in with password."""
    user = User(
        email=email or f"{role.value}-{uuid.uuid4().hex[:8]}@example.test",
        role=role,
        branch=branch,
        active=active,
        password_hash=password_hash(password),
    )
    db.session.add(user)
    db.session.commit()
    return user


def bearer(user: User) -> dict[str, str]:
    """Authorization headers with a fresh token of user's."""
    token = ApiToken.issue(user)
    db.session.commit()
    return {"Authorization": f"Bearer {token}"}


def login(client, email: str, password: str = PASSWORD, next_url: str | None = None, **form):
    """The login form's answer to email and password (a redirect when they are right)."""
    url = "/login" + (f"?next={next_url}" if next_url else "")
    return client.post(url, data={"email": email, "password": password, **form})


def signed_in(client, email: str, password: str = PASSWORD):
    """client, signed in as email through the login form."""
    response = login(client, email, password)
    assert response.status_code == 302, response.get_data(as_text=True)
    return client
