"""Failed sign-ins are limited per email and per client address (LOGIN_RATE_LIMIT), on the API's token route
and the login form alike; only failures count, and a spent budget refuses the right password too."""

from __future__ import annotations

import re
import time

import pytest
from werkzeug.security import generate_password_hash

from edcrm import auth, create_app
from edcrm.config import ConfigError, from_env
from edcrm.extensions import db
from edcrm.jobs import records
from edcrm.models import Branch, Role
from tests.support.people import make_user

PASSWORD = "secret-password"
CALLER = "caller@kochi.test"


#: A hash that is quick to check: these tests check hundreds of passwords, and the hash is not under test.
QUICK = "pbkdf2:sha256:1"


@pytest.fixture(autouse=True)
def quick_hashes(monkeypatch):
    quick = generate_password_hash("never-a-password", QUICK)
    monkeypatch.setattr(auth, "_dummy_hash", lambda: quick)  # what an unknown email is checked against


@pytest.fixture
def people(app):
    with app.app_context():
        kochi = Branch.get_or_create("Kochi")
        for user in (
            make_user(kochi, Role.TELECALLER, email=CALLER),
            make_user(kochi, Role.ADMIN, email="admin@kochi.test"),
        ):
            user.password_hash = generate_password_hash(PASSWORD, QUICK)
        db.session.commit()


def api(client, email=CALLER, password="wrong-password", address="10.0.0.1", **headers):
    return client.post(
        "/api/auth/token",
        json={"email": email, "password": password},
        environ_base={"REMOTE_ADDR": address},
        headers=headers,
    )


def form(client, email=CALLER, password="wrong-password", address="10.0.0.1"):
    return client.post(
        "/login", data={"email": email, "password": password}, environ_base={"REMOTE_ADDR": address}
    )


def retry_after(response) -> int:
    seconds = int(response.headers["Retry-After"])
    assert 1 <= seconds <= 300
    return seconds


def test_the_eleventh_wrong_password_is_429_with_retry_after_and_so_is_the_right_one(client, people):
    assert [api(client).status_code for _ in range(10)] == [401] * 10

    refused = api(client)
    assert refused.status_code == 429
    assert refused.get_json()["error"]["code"] == "too_many_requests"
    assert "try again in" in refused.get_json()["error"]["message"]
    retry_after(refused)
    # Were the right password let through, the 429s would tell an attacker every wrong guess apart.
    right = api(client, password=PASSWORD)
    assert right.status_code == 429
    retry_after(right)


def test_the_email_budget_holds_whatever_address_the_guesses_come_from(client, people):
    for n in range(10):
        assert api(client, address=f"10.0.1.{n}").status_code == 401

    assert api(client, address="10.0.2.1", password=PASSWORD).status_code == 429
    # Another email from a fresh address is not held back.
    assert api(client, "admin@kochi.test", PASSWORD, address="10.0.2.1").status_code == 200


def test_the_address_budget_holds_across_emails(client, people):
    for n in range(10):
        assert api(client, f"guess{n}@kochi.test").status_code == 401

    assert api(client, "admin@kochi.test", PASSWORD).status_code == 429
    assert api(client, "admin@kochi.test", PASSWORD, address="10.9.9.9").status_code == 200


def test_an_ipv6_client_is_counted_by_its_64_block(client, people):
    for n in range(10):
        assert api(client, f"guess{n}@kochi.test", address=f"2001:db8:1:2::{n + 1:x}").status_code == 401

    assert api(client, "more@kochi.test", address="2001:db8:1:2:ffff::1").status_code == 429
    assert api(client, "admin@kochi.test", PASSWORD, address="2001:db8:1:3::1").status_code == 200


def test_x_forwarded_for_is_not_believed(client, people):
    for n in range(10):
        response = api(client, f"guess{n}@kochi.test", **{"X-Forwarded-For": f"192.0.2.{n}"})
        assert response.status_code == 401

    assert api(client, "other@kochi.test", **{"X-Forwarded-For": "192.0.2.200"}).status_code == 429


def test_behind_trusted_proxies_the_address_they_saw_counts_not_what_the_client_wrote(app, client, people):
    app.config["TRUSTED_PROXIES"] = 1
    for n in range(10):  # one client behind the proxy 10.0.0.1, inventing a new address each time
        forwarded = {"X-Forwarded-For": f"198.51.100.{n}, 192.0.2.7"}
        assert api(client, f"guess{n}@kochi.test", **forwarded).status_code == 401

    assert api(client, "other@kochi.test", **{"X-Forwarded-For": "192.0.2.7"}).status_code == 429
    # Another client behind the same proxy has a budget of its own.
    assert api(client, "admin@kochi.test", PASSWORD, **{"X-Forwarded-For": "192.0.2.8"}).status_code == 200


def test_only_failures_count(client, people):
    for _ in range(25):
        assert api(client, password=PASSWORD).status_code == 200

    assert [api(client).status_code for _ in range(10)] == [401] * 10
    assert api(client).status_code == 429


def test_the_form_and_the_api_spend_one_budget(client, people):
    for _ in range(5):
        assert api(client).status_code == 401
        assert form(client).status_code == 401

    assert api(client, password=PASSWORD).status_code == 429
    assert form(client, password=PASSWORD).status_code == 429


def test_the_form_shows_itself_again_with_the_reason(client, people):
    for _ in range(10):
        assert form(client).status_code == 401

    page = form(client, password=PASSWORD)
    assert page.status_code == 429
    assert page.mimetype == "text/html"
    seconds = retry_after(page)
    text = page.get_data(as_text=True)
    assert re.search(rf"Too many failed sign-ins .*try again in {seconds} seconds", text)
    assert 'name="password"' in text  # the form, not an error page
    assert client.get("/").status_code == 302  # and nobody was signed in


@pytest.fixture
def app_with(app):
    """app_with(**config): another app on the same database, with settings of its own."""
    made = []

    def app_with(**config):
        made.append(create_app(dict(app.config) | config))
        return made[-1]

    yield app_with
    for other in made:
        with other.app_context():
            db.session.remove()
            db.engine.dispose()
        records.dispose_engine(other)


def test_the_budget_comes_back_once_the_failures_leave_the_window(people, app_with):
    client = app_with(LOGIN_RATE_LIMIT="2 per 1 second").test_client()
    assert [api(client).status_code for _ in range(3)] == [401, 401, 429]

    # Wait for the state (the window moves on), never for a fixed time.
    deadline = time.monotonic() + 10
    while (response := api(client, password=PASSWORD)).status_code == 429 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert response.status_code == 200


def test_with_redis_unreachable_the_limit_still_holds_in_memory(people, app_with, caplog):
    client = app_with(RATELIMIT_STORAGE_URI="redis://127.0.0.1:1/0").test_client()

    assert [api(client).status_code for _ in range(11)] == [401] * 10 + [429]
    assert api(client, "admin@kochi.test", PASSWORD, address="10.9.9.9").status_code == 200
    assert "counting in memory" in caplog.text


def test_the_limit_and_its_storage_come_from_the_environment(tmp_path, app_with):
    assert from_env({}, tmp_path, {"SECRET_KEY": "x"})["LOGIN_RATE_LIMIT"] == "10 per 5 minutes"
    assert from_env({}, tmp_path, {"SECRET_KEY": "x"})["RATELIMIT_STORAGE_URI"] == "memory://"
    config = from_env(
        {"LOGIN_RATE_LIMIT": " 3 per hour ", "REDIS_URL": "redis://127.0.0.1:6379/4"},
        tmp_path,
        {"SECRET_KEY": "x"},
    )
    assert config["LOGIN_RATE_LIMIT"] == "3 per hour"
    assert config["RATELIMIT_STORAGE_URI"] == "redis://127.0.0.1:6379/4"
    for wrong in ("often", "0 per minute", "10 per minute; 100 per day"):
        with pytest.raises(ConfigError, match="LOGIN_RATE_LIMIT must read like"):
            app_with(LOGIN_RATE_LIMIT=wrong)
