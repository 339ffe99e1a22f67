"""`flask edcrm seed-demo | create-user | create-token | deactivate-user | revoke-tokens`."""

from __future__ import annotations

import json

import pytest

from edcrm.extensions import db
from edcrm.models import Branch, Role, User
from tests.support.people import make_user


def run(runner, *args):
    return runner.invoke(args=["edcrm", *args], catch_exceptions=False)


def seed(runner) -> dict:
    result = run(runner, "seed-demo", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def api_ok(client, token) -> bool:
    response = client.get("/api/leads", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code in (200, 401)
    return response.status_code == 200


def sign_in(client, email, password) -> int:
    """The status of asking the API for a token with email and password."""
    return client.post("/api/auth/token", json={"email": email, "password": password}).status_code


def test_seed_demo_prints_the_contracts_shape(app, runner, client):
    with app.app_context():
        data = seed(runner)

        assert set(data) == {"branch_id", "admin", "telecallers"}
        assert len(data["telecallers"]) == 3
        logins = [data["admin"], *data["telecallers"]]
        for login in logins:
            assert set(login) == {"id", "email", "password", "token"}
        assert len({login["email"] for login in logins}) == 4
        admin = db.session.get(User, data["admin"]["id"])
        assert admin.role == Role.ADMIN and admin.branch_id == data["branch_id"]
        for login in data["telecallers"]:
            user = db.session.get(User, login["id"])
            assert user.role == Role.TELECALLER and user.branch_id == data["branch_id"]


def test_the_printed_logins_work(app, runner, client):
    with app.app_context():
        data = seed(runner)
    for login in [data["admin"], *data["telecallers"]]:
        assert api_ok(client, login["token"])
        response = client.post(
            "/api/auth/token", json={"email": login["email"], "password": login["password"]}
        )
        assert response.status_code == 200


def test_seed_demo_again_keeps_the_users_and_replaces_the_demo_tokens(app, runner, client):
    with app.app_context():
        first = seed(runner)
        second = seed(runner)
        assert db.session.execute(db.select(db.func.count(User.id))).scalar_one() == 4
        assert db.session.execute(db.select(db.func.count(Branch.id))).scalar_one() == 1

    assert second["branch_id"] == first["branch_id"]
    assert [t["id"] for t in second["telecallers"]] == [t["id"] for t in first["telecallers"]]
    assert second["admin"]["token"] != first["admin"]["token"]
    assert not api_ok(client, first["admin"]["token"])
    assert api_ok(client, second["admin"]["token"])


def test_seed_demo_restores_a_changed_demo_password_and_a_deactivated_user(app, runner, client):
    with app.app_context():
        first = seed(runner)
        user = db.session.get(User, first["telecallers"][0]["id"])
        user.set_password("changed-password")
        user.active = False
        db.session.commit()
        again = seed(runner)

    login = again["telecallers"][0]
    assert sign_in(client, login["email"], login["password"]) == 200


def test_seed_demo_keeps_tokens_that_are_not_demo_ones(app, runner, client):
    with app.app_context():
        email = seed(runner)["admin"]["email"]
        own = run(runner, "create-token", email).output.strip()
        seed(runner)
    assert api_ok(client, own)


def test_seed_demo_without_json_prints_readable_logins(app, runner):
    with app.app_context():
        result = run(runner, "seed-demo")

    assert result.exit_code == 0
    assert "admin@demo.edcrm.test" in result.output
    assert "demo-admin-password" in result.output
    with pytest.raises(json.JSONDecodeError):
        json.loads(result.output)


def test_if_empty_seeds_an_empty_database(app, runner):
    with app.app_context():
        result = run(runner, "seed-demo", "--if-empty", "--json")

        assert result.exit_code == 0
        assert len(json.loads(result.output)["telecallers"]) == 3


def test_if_empty_does_nothing_once_anyone_exists(app, runner, branch):
    make_user(branch, Role.ADMIN, email="real@kochi.test")

    result = run(runner, "seed-demo", "--if-empty")

    assert result.exit_code == 0
    assert result.output == ""
    assert db.session.execute(db.select(db.func.count(User.id))).scalar_one() == 1


def test_if_empty_reminds_of_the_demo_logins_without_revoking_their_tokens(app, runner):
    with app.app_context():
        first = json.loads(run(runner, "seed-demo", "--json").output)

        result = run(runner, "seed-demo", "--if-empty")

        assert result.exit_code == 0
        assert "admin@demo.edcrm.test" in result.output and "demo-admin-password" in result.output
        assert "telecaller3@demo.edcrm.test" in result.output
        assert first["admin"]["token"] not in result.output
        headers = {"Authorization": f"Bearer {first['admin']['token']}"}
        assert app.test_client().get("/api/leads", headers=headers).status_code == 200


def test_create_user_creates_the_branch_and_a_user_who_can_sign_in(app, runner, client):
    with app.app_context():
        result = run(
            runner,
            "create-user",
            "--email",
            "New.Caller@Example.test",
            "--password",
            "long-enough",
            "--role",
            "telecaller",
            "--branch",
            "Kannur",
        )
        assert result.exit_code == 0, result.output
        user = User.by_email("new.caller@example.test")
        assert user.role == Role.TELECALLER and user.branch.name == "Kannur"

    response = client.post(
        "/api/auth/token", json={"email": "new.caller@example.test", "password": "long-enough"}
    )
    assert response.status_code == 200


def test_create_user_joins_an_existing_branch(app, runner, branch):
    result = run(
        runner, "create-user", "--email", "a@kochi.test", "--password", "long-enough", "--role", "admin",
        "--branch", "Kochi",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert User.by_email("a@kochi.test").branch_id == branch.id


def test_create_user_refuses_a_duplicate_email(app, runner, telecaller):
    result = runner.invoke(
        args=["edcrm", "create-user", "--email", "CALLER@kochi.test", "--password", "long-enough",
              "--role", "admin", "--branch", "Kochi"],
    )  # fmt: skip

    assert result.exit_code == 1
    assert "already exists" in result.output
    assert User.by_email("caller@kochi.test").role == Role.TELECALLER


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [("--role", "manager", "manager"), ("--password", "short", "8 characters"), ("--email", "nope", "email")],
)
def test_create_user_refuses_bad_options(app, runner, option, value, expected):
    options = {"--email": "x@example.test", "--password": "long-enough", "--role": "admin", "--branch": "B"}
    options[option] = value
    with app.app_context():
        result = runner.invoke(
            args=["edcrm", "create-user", *[part for item in options.items() for part in item]]
        )

        assert result.exit_code == 2
        assert expected in result.output
        assert db.session.execute(db.select(User)).first() is None


def test_create_token_prints_only_a_working_token(app, runner, client, telecaller):
    result = run(runner, "create-token", "caller@kochi.test")

    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert len(lines) == 1
    assert api_ok(client, lines[0])


def test_create_token_for_an_unknown_email_fails(app, runner):
    with app.app_context():
        result = runner.invoke(args=["edcrm", "create-token", "nobody@example.test"])

    assert result.exit_code == 1
    assert "no user" in result.output


def test_create_token_for_a_deactivated_user_fails(app, runner, branch):
    make_user(branch, email="gone@kochi.test", active=False)

    result = runner.invoke(args=["edcrm", "create-token", "gone@kochi.test"])

    assert result.exit_code == 1
    assert "deactivated" in result.output


def test_deactivate_user_shuts_out_tokens_and_passwords(app, runner, client, telecaller):
    token = run(runner, "create-token", "caller@kochi.test").output.strip()

    result = run(runner, "deactivate-user", "caller@kochi.test")

    assert result.exit_code == 0
    assert not api_ok(client, token)
    response = client.post(
        "/api/auth/token", json={"email": "caller@kochi.test", "password": "secret-password"}
    )
    assert response.status_code == 401


def test_revoke_tokens_by_name(app, runner, client, telecaller):
    phone = run(runner, "create-token", "caller@kochi.test", "--name", "phone").output.strip()
    laptop = run(runner, "create-token", "caller@kochi.test", "--name", "laptop").output.strip()

    result = run(runner, "revoke-tokens", "caller@kochi.test", "--name", "phone")

    assert "revoked 1 token" in result.output
    assert not api_ok(client, phone)
    assert api_ok(client, laptop)
    run(runner, "revoke-tokens", "caller@kochi.test")
    assert not api_ok(client, laptop)
