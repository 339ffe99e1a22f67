"""Signing in and out against a real gunicorn: brute force is cut off (429, on the API and the form, across
processes), cookies copied before sign-out are worthless after it, every response carries the security
headers, `make run` is reachable from this machine only, and /metrics shows no branch's figures to
another branch's admin."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest
import redis
import requests

from tests.support.processes import BIN, REPO, Service, free_port, http_get, service_env, wait_for
from tests.support.server import Server, start_server

ATTEMPTS = 30
LIMIT = 10  # LOGIN_RATE_LIMIT's default: 10 per 5 minutes
METRICS_TOKEN = "hostile-metrics-token-0123456789"


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    """The module's shared gunicorn, with a metrics token (operators scrape /metrics with it)."""
    yield from start_server(tmp_path_factory.mktemp("hostile-auth"), METRICS_TOKEN=METRICS_TOKEN)


def csrf_token(page: requests.Response) -> str:
    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page.text)
    assert match, f"no CSRF token in {page.url}"
    return match.group(1)


def form_login(server, browser: requests.Session, email: str, password: str, **extra) -> requests.Response:
    """The login form as a browser sends it: its page first (the session and CSRF token), then the POST."""
    token = csrf_token(browser.get(f"{server.base}/login", timeout=30))
    data = {"email": email, "password": password, "csrf_token": token, **extra}
    return browser.post(f"{server.base}/login", data=data, allow_redirects=False, timeout=30)


def api_login(server, email: str, password: str) -> requests.Response:
    # A new connection each time (no session): with several web processes, each may get some.
    return requests.post(
        f"{server.base}/api/auth/token", json={"email": email, "password": password}, timeout=30
    )


def assert_limited(statuses: list[int], responses: list[requests.Response]) -> None:
    assert statuses == [401] * LIMIT + [429] * (ATTEMPTS - LIMIT), statuses
    for response in responses[LIMIT:]:
        assert 1 <= int(response.headers["Retry-After"]) <= 300


# -- brute force ---------------------------------------------------------------------------------------------


def test_thirty_wrong_passwords_on_the_api_get_429_after_the_limit(serve):
    server = serve()
    email = server.admin["email"]

    responses = [api_login(server, email, f"guess-{n}") for n in range(ATTEMPTS)]

    assert_limited([r.status_code for r in responses], responses)
    assert responses[-1].json()["error"]["code"] == "too_many_requests"
    # The right password too, now: a 200 among the 429s would tell the attacker they found it.
    assert api_login(server, email, server.admin["password"]).status_code == 429
    # The address's budget is spent as well: another user's right password from here waits too.
    caller = server.telecaller
    assert api_login(server, caller["email"], caller["password"]).status_code == 429


def test_thirty_wrong_passwords_on_the_form_get_429_after_the_limit(serve):
    server = serve()
    browser = requests.Session()
    email = server.admin["email"]

    responses = [form_login(server, browser, email, f"guess-{n}") for n in range(ATTEMPTS)]

    assert_limited([r.status_code for r in responses], responses)
    last = responses[-1]
    assert last.headers["Content-Type"].startswith("text/html")
    assert "Too many failed sign-ins" in last.text
    assert 'name="password"' in last.text  # the form again, to try later
    assert form_login(server, browser, email, server.admin["password"]).status_code == 429
    assert browser.get(f"{server.base}/", allow_redirects=False, timeout=30).status_code == 302


def test_the_limit_is_shared_by_two_web_processes_through_redis(serve, redis_url):
    client = redis.Redis.from_url(redis_url)
    client.flushdb()  # no failures counted by an earlier run
    client.close()
    access_log = "--access-logformat '%(p)s %(m)s %(U)s %(s)s'"  # which process answered
    server = serve(REDIS_URL=redis_url, WEB_CONCURRENCY="2", GUNICORN_CMD_ARGS=access_log)
    email = server.admin["email"]

    responses = [api_login(server, email, f"guess-{n}") for n in range(ATTEMPTS)]

    answered_by = set(re.findall(r"<(\d+)> POST /api/auth/token", server.process.output(tail=200_000)))
    assert len(answered_by) == 2, f"one process answered every attempt: {answered_by}"
    # Counted per process, each would have let LIMIT through.
    assert_limited([r.status_code for r in responses], responses)


# -- signing out ---------------------------------------------------------------------------------------------


def test_cookies_copied_before_sign_out_open_nothing_after(server):
    browser = requests.Session()
    caller = server.telecaller
    signed_in = form_login(server, browser, caller["email"], caller["password"], remember="y")
    assert signed_in.status_code == 302
    remember = next(c for c in signed_in.raw.headers.getlist("Set-Cookie") if c.startswith("remember_token="))
    assert "HttpOnly" in remember and "SameSite=Lax" in remember
    copied = {name: browser.cookies[name] for name in ("session", "remember_token")}

    def opens_home(**cookies: str) -> bool:
        thief = requests.Session()
        for name, value in cookies.items():
            thief.cookies.set(name, value, domain="127.0.0.1")
        response = thief.get(f"{server.base}/", allow_redirects=False, timeout=30)
        return response.status_code == 200

    assert opens_home(session=copied["session"])  # each copy works on its own before the sign-out
    assert opens_home(remember_token=copied["remember_token"])

    home = browser.get(f"{server.base}/", timeout=30)
    signed_out = browser.post(
        f"{server.base}/logout", data={"csrf_token": csrf_token(home)}, allow_redirects=False, timeout=30
    )
    assert signed_out.status_code == 302

    assert not opens_home(session=copied["session"])
    assert not opens_home(remember_token=copied["remember_token"])
    assert not opens_home(**copied)


# -- headers -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/login", "/jobs", "/api/leads", "/api/no-such-route", "/static/jobs.js"])
def test_pages_and_the_api_send_the_security_headers(server, path):
    browser = requests.Session()
    admin = server.admin
    assert form_login(server, browser, admin["email"], admin["password"]).status_code == 302
    headers = {"Authorization": f"Bearer {admin['token']}"}

    response = browser.get(f"{server.base}{path}", headers=headers, allow_redirects=False, timeout=30)

    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"


# -- make run ------------------------------------------------------------------------------------------------


def non_loopback_address() -> str | None:
    """An address of this machine other than loopback (IPv4 first), or None."""
    try:
        found = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=10).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    found.sort(key=lambda address: ":" in address)
    return next((address for address in found if not address.startswith("127.")), None)


def test_make_run_listens_on_loopback_only(tmp_path):
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no address but loopback (hostname -I)")
    port = free_port()
    env = service_env(
        EDCRM_INSTANCE_PATH=tmp_path / "instance",
        STORAGE_URL=(tmp_path / "storage").as_uri(),
        PORT=port,
        TMPDIR=tmp_path,
    )
    venv = BIN.parent
    # -o: the virtualenv counts as installed; the test runs make's server, never pip.
    argv = ["make", "--no-print-directory", "-o", f"{venv}/.installed", "run", f"VENV={venv}"]
    with Service(argv, env=env, log_path=tmp_path / "make-run.log", name="make run") as served:
        wait_for(
            lambda: http_get(f"http://127.0.0.1:{port}/healthz"), timeout=90, what="make run", watch=served
        )
        assert f"edcrm is starting on http://127.0.0.1:{port}" in served.output()

        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock, pytest.raises(ConnectionRefusedError):
            sock.settimeout(5)
            sock.connect((address, port))


# -- metrics ----------------------------------------------------------------------------------------------

#: An admin of a branch of their own (argv[1]) with an API token, which it prints.
MAKE_OUTSIDER = """
import sys
from edcrm import create_app
from edcrm.extensions import db
from edcrm.models import ApiToken, Branch, Role, User
app = create_app()
with app.app_context():
    user = User(email="admin@elsewhere.test", role=Role.ADMIN, branch=Branch.get_or_create(sys.argv[1]))
    user.set_password("outsider-password")
    db.session.add(user)
    token = ApiToken.issue(user)
    db.session.commit()
    print(token)
"""


def test_another_branchs_admin_gets_no_series_from_metrics(server):
    argv = [sys.executable, "-c", MAKE_OUTSIDER, "Elsewhere"]
    made = subprocess.run(argv, env=server.env, cwd=REPO, capture_output=True, text=True, check=True)
    outsider = made.stdout.strip()

    for token in (outsider, server.admin["token"]):  # another branch's admin, and this branch's own
        response = requests.get(
            f"{server.base}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        assert response.status_code == 403
        assert "edcrm_jobs" not in response.text
        assert response.json()["error"]["code"] == "forbidden"

    operators = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    scraped = requests.get(f"{server.base}/metrics", headers=operators, timeout=30)
    assert scraped.status_code == 200
    assert 'edcrm_jobs{queue="csv_import",state="retrying"}' in scraped.text  # what operators see
