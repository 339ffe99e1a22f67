"""Headless Chromium (Debian's `chromium`, driven by Playwright through its executable_path) against the
real app: gunicorn in the embedded mode (SQLite, in-process workers), files in moto's S3 server over HTTP.

Without a Chromium these tests skip, saying so; under CI=true they fail instead. Every test keeps
screenshots in tests/artifacts/browser/, and one of the page as it was when a test failed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from tests.support.processes import free_port, http_get, run_flask, service_env, start_gunicorn, wait_for
from tests.support.s3_server import AWS_ENV
from tests.support.services import service_unavailable

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "browser"
#: Chromium as root in a container, with nothing reaching out to Google's services (refused here).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CANDIDATES = ("chromium", "chromium-browser", "google-chrome-stable", "google-chrome")


def find_chromium() -> str | None:
    """CHROMIUM_PATH, else the first Chromium on PATH."""
    explicit = os.environ.get("CHROMIUM_PATH")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    return next((path for name in CANDIDATES if (path := shutil.which(name))), None)


@pytest.fixture(scope="session")
def chromium():
    """A headless Chromium, shared by the session's tests (each gets a fresh context: no shared cookie)."""
    path = find_chromium()
    if path is None:
        service_unavailable(
            "Chromium", "no chromium on PATH and no CHROMIUM_PATH; `apt-get install chromium`"
        )
    from playwright.sync_api import Error, sync_playwright

    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        except Error as exc:
            service_unavailable("Chromium", f"{path} did not start: {str(exc).splitlines()[0]}")
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def served(s3_server, tmp_path_factory):
    """The app as `make run` serves it, on a port of its own; its URL, demo logins and S3 server."""
    root = tmp_path_factory.mktemp("served")
    bucket = s3_server.create_bucket()
    port = free_port()
    env = service_env(
        DATABASE_URL=f"sqlite:///{root / 'edcrm.sqlite3'}",
        STORAGE_URL=f"s3://{bucket}/edcrm",
        S3_ENDPOINT_URL=s3_server.endpoint_url,
        EDCRM_INSTANCE_PATH=root / "instance",
        PORT=port,
        SECRET_KEY="browser-tests",
        # Failed attempts retried fast, so that a job fails for good within seconds.
        JOB_MIN_BACKOFF_MS="100",
        JOB_MAX_BACKOFF_MS="300",
        **AWS_ENV,
    )
    run_flask("db", "upgrade", env=env)
    demo = json.loads(run_flask("edcrm", "seed-demo", "--json", env=env).stdout)
    with start_gunicorn(env, root / "gunicorn.log") as web:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: http_get(f"{base}/healthz"), timeout=60, what="gunicorn", watch=web)
        yield type("Served", (), {"url": base, "demo": demo, "s3": s3_server, "web": web})


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def shots(request):
    """shots(page, name): keep a screenshot of page as tests/artifacts/browser/TEST-NAME.png."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)

    def take(page, name: str, **options) -> Path:
        path = ARTIFACTS / f"{stem}-{name}.png"
        page.screenshot(path=path, full_page=True, **options)
        return path

    return take


@pytest.fixture
def browser_context(chromium, request, shots):
    """A fresh browser context (its own cookies); a screenshot of its pages if the test fails, and a
    failure if a page broke its Content-Security-Policy (an inline script or style the browser refused)."""
    context = chromium.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    context.set_default_timeout(15_000)
    refused = []
    context.on(
        "console", lambda message: "Content Security Policy" in message.text and refused.append(message.text)
    )
    yield context
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        for number, page in enumerate(context.pages):
            shots(page, f"failed-{number}")
    context.close()
    assert not refused, f"the browser refused what the Content-Security-Policy forbids: {refused}"
