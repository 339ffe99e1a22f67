"""`flask edcrm seed-demo | create-user | create-token | deactivate-user | revoke-tokens`."""

from __future__ import annotations

import json
from typing import Any, cast

import click
import sqlalchemy as sa
from sqlalchemy.engine import CursorResult

from ..extensions import db
from ..models import ApiToken, Branch, Role, User
from ..models.types import utcnow
from .group import edcrm_cli

DEMO_BRANCH = "Demo Branch"
DEMO_TOKEN_NAME = "demo"
#: The demo logins: printed by `make run`, so they are known on purpose. Never use them in production.
DEMO_ADMIN = ("admin@demo.edcrm.test", "demo-admin-password")
DEMO_TELECALLERS = [(f"telecaller{n}@demo.edcrm.test", f"demo-telecaller{n}-password") for n in (1, 2, 3)]

MIN_PASSWORD_LENGTH = 8


def _user_or_fail(email: str) -> User:
    user = User.by_email(email)
    if user is None:
        raise click.ClickException(f"no user with email {User.normalize_email(email)}")
    return user


def _revoke(user: User, name: str | None = None) -> int:
    """Revoke user's live tokens (only those called name, if given); how many."""
    stmt = sa.update(ApiToken).where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
    if name is not None:
        stmt = stmt.where(ApiToken.name == name)
    # An UPDATE answers a CursorResult, which counts its rows (Session.execute is typed as a Result).
    return cast(CursorResult[Any], db.session.execute(stmt.values(revoked_at=utcnow()))).rowcount


def _demo_user(branch: Branch, role: Role, email: str, password: str) -> dict:
    """The demo user, created or put back as the demo needs it, with a fresh "demo" token."""
    user = User.by_email(email)
    if user is None:
        user = User(email=email)
        db.session.add(user)
    user.role, user.branch, user.active = role, branch, True
    if user.password_hash is None or not user.check_password(password):
        user.set_password(password)
    db.session.flush()
    _revoke(user, DEMO_TOKEN_NAME)
    token = ApiToken.issue(user, name=DEMO_TOKEN_NAME)
    return {"id": user.id, "email": user.email, "password": password, "token": token}


@edcrm_cli.command("seed-demo")
@click.option("--json", "as_json", is_flag=True, help="Print the logins as JSON.")
@click.option(
    "--if-empty", is_flag=True, help="Create nothing when any user exists; only remind of the demo logins."
)
def seed_demo(as_json: bool, if_empty: bool):
    """Make (or refresh) a demo branch with one admin and three telecallers, and print their logins.

    Safe to run again: the same users, their demo passwords restored, and new "demo" tokens (the old
    ones are revoked).
    """
    if if_empty and db.session.execute(sa.select(User.id).limit(1)).first() is not None:
        _remind_demo_logins()
        return
    branch = Branch.get_or_create(DEMO_BRANCH)
    admin = _demo_user(branch, Role.ADMIN, *DEMO_ADMIN)
    telecallers = [_demo_user(branch, Role.TELECALLER, *login) for login in DEMO_TELECALLERS]
    db.session.commit()
    if as_json:
        click.echo(json.dumps({"branch_id": branch.id, "admin": admin, "telecallers": telecallers}))
        return
    click.echo(f"Demo branch {branch.name!r} (id {branch.id}). Sign in with:")
    for role, login in [("admin", admin), *(("telecaller", t) for t in telecallers)]:
        click.echo(f"  {role:<10}  {login['email']:<30}  password {login['password']}")
    click.echo("API tokens (send as Authorization: Bearer TOKEN):")
    for login in [admin, *telecallers]:
        click.echo(f"  {login['email']:<30}  {login['token']}")


def _remind_demo_logins() -> None:
    """Print the demo logins that still work (no new tokens: the existing ones stay valid)."""
    working = [
        (user.role.value, email, password)
        for email, password in [DEMO_ADMIN, *DEMO_TELECALLERS]
        if (user := User.by_email(email)) is not None and user.active and user.check_password(password)
    ]
    if not working:
        return
    click.echo("Demo logins:")
    for role, email, password in working:
        click.echo(f"  {role:<10}  {email:<30}  password {password}")
    click.echo("(`flask --app app edcrm seed-demo` prints them with fresh API tokens.)")


@edcrm_cli.command("create-user")
@click.option("--email", required=True)
@click.option("--password", required=True, help=f"At least {MIN_PASSWORD_LENGTH} characters.")
@click.option("--role", required=True, type=click.Choice([role.value for role in Role]))
@click.option("--branch", "branch_name", required=True, help="The branch's name; created if missing.")
def create_user(email: str, password: str, role: str, branch_name: str):
    """Create an admin or telecaller of a branch."""
    email = User.normalize_email(email)
    if "@" not in email:
        raise click.BadParameter(f"{email!r} is not an email address", param_hint="--email")
    if len(password) < MIN_PASSWORD_LENGTH:
        message = f"must be at least {MIN_PASSWORD_LENGTH} characters"
        raise click.BadParameter(message, param_hint="--password")
    branch_name = branch_name.strip()
    if not branch_name:
        raise click.BadParameter("must not be empty", param_hint="--branch")
    if User.by_email(email) is not None:
        raise click.ClickException(f"a user with email {email} already exists")
    user = User(email=email, role=Role(role), branch=Branch.get_or_create(branch_name))
    user.set_password(password)
    db.session.add(user)
    try:
        db.session.commit()
    except sa.exc.IntegrityError:  # created by someone else meanwhile
        db.session.rollback()
        raise click.ClickException(f"a user with email {email} already exists") from None
    click.echo(f"created {user.role.value} {user.email} (id {user.id}) in branch {branch_name!r}")


@edcrm_cli.command("create-token")
@click.argument("email")
@click.option("--name", default="api", show_default=True, help="A label, e.g. the device it is for.")
def create_token(email: str, name: str):
    """Issue an API token for a user and print it (only now: it is stored hashed)."""
    user = _user_or_fail(email)
    if not user.active:
        raise click.ClickException(f"{user.email} is deactivated; a token of theirs would not work")
    token = ApiToken.issue(user, name=name)
    db.session.commit()
    click.echo(token)


@edcrm_cli.command("deactivate-user")
@click.argument("email")
def deactivate_user(email: str):
    """Stop a user from signing in, and revoke their tokens."""
    user = _user_or_fail(email)
    user.active = False
    revoked = _revoke(user)
    db.session.commit()
    click.echo(f"deactivated {user.email}; revoked {revoked} token(s)")


@edcrm_cli.command("revoke-tokens")
@click.argument("email")
@click.option("--name", help="Only the tokens with this label.")
def revoke_tokens(email: str, name: str | None):
    """Revoke a user's API tokens (a lost phone)."""
    user = _user_or_fail(email)
    revoked = _revoke(user, name)
    db.session.commit()
    click.echo(f"revoked {revoked} token(s) of {user.email}")
