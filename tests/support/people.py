"""The people of the tests: users with a password, API tokens, and signing in through the login form.

A test user's stored password hash is made once per distinct password and session, with scrypt at a
test's work factor (TEST_HASH_METHOD): the production one costs a tenth of a second or more to make and
again to check, and the suite makes hundreds of users and signs in hundreds of times. Checking still goes
through the production code (`User.check_password`, which reads the work factor from the stored hash).
`User.set_password` (the CLI's seed-demo and create-user) keeps the production work factor: it hashes
each distinct password once per session, and `User.check_password` checks a password against a hash
once (`hash_each_password_once`).
"""

from __future__ import annotations

import functools
import uuid

from werkzeug.security import generate_password_hash

from edcrm.extensions import db
from edcrm.models import ApiToken, Branch, Role, User
from edcrm.models import user as user_model

PASSWORD = "secret-password"
#: werkzeug's scrypt at N=2**8 rather than production's 2**15: the same code at a test's cost.
TEST_HASH_METHOD = "scrypt:256:8:1"


@functools.cache
def password_hash(password: str) -> str:
    """The stored hash of a test user's password, made once per session."""
    return generate_password_hash(password, TEST_HASH_METHOD)


def hash_each_password_once() -> None:
    """User.set_password hashes a password it has hashed before in this session to the same stored hash
    (the same salt): its work factor stays the production one, and it costs once per password.
    User.check_password checks a password against a stored hash once per session likewise (the answer
    is a function of the two): the CLI's tests sign in with the seeded passwords again and again."""
    user_model.generate_password_hash = functools.cache(user_model.generate_password_hash)
    user_model.check_password_hash = functools.cache(user_model.check_password_hash)


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
