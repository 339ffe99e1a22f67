"""Uppy's tus plugin in headless Chromium uploads a recording to edcrm from a page of another origin (CORS):
tests/clients/uppy.html, served by a static server on `localhost`, against gunicorn and a dramatiq worker
on `127.0.0.1` with CORS_ORIGINS naming the page's origin, on moto's S3 server and on Ceph RGW. The
Recording's SHA-256 and bytes are the file's. The same page from an origin CORS_ORIGINS does not name
gets nothing through.
"""

from __future__ import annotations

import functools
import http.server
import threading
from urllib.parse import urlencode

import pytest

from tests.support.stack import running_stack
from tests.support.tus_clients import (
    MIB,
    SETTINGS,
    TUS,
    assert_recorded,
    recording,
    require_node_clients,
    sha256,
    upload_id_of,
)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args) -> None:
        return None


@pytest.fixture(scope="module")
def page_server():
    """tests/clients over HTTP on a port of its own (the page, and Uppy's bundle from node_modules)."""
    clients = require_node_clients(browser=True)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=clients))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    thread.join()
    server.server_close()


@pytest.fixture(scope="module")
def uppy_stack(postgres_url, redis_url, s3_endpoint, page_server, tmp_path_factory):
    """The API on 127.0.0.1, allowing the page's origin http://localhost:PORT (another host, another
    origin)."""
    settings = {**SETTINGS, "CORS_ORIGINS": f"http://localhost:{page_server}"}
    folder = tmp_path_factory.mktemp(f"uppy-{s3_endpoint.name}")
    with running_stack(postgres_url, redis_url, s3_endpoint, folder, settings=settings) as stack:
        yield stack


def open_page(context, origin: str, stack, call_log_id: int, **query: str):
    page = context.new_page()
    settings = {
        "endpoint": f"{stack.base}{TUS}",
        "token": stack.token,
        "call_log_id": str(call_log_id),
        **query,
    }
    page.goto(f"{origin}/uppy.html?{urlencode(settings)}")
    return page


def test_uppy_uploads_a_recording_from_another_origin(
    uppy_stack, page_server, browser_context, shots, tmp_path
):
    call_log_id = uppy_stack.new_call_log()
    data = recording(tmp_path / "call.wav", 7 * MIB + 21, seed=21)

    page = open_page(
        browser_context,
        f"http://localhost:{page_server}",
        uppy_stack,
        call_log_id,
        sha256=sha256(data),
        chunk_size=str(3 * MIB),
    )
    page.set_input_files("#file", tmp_path / "call.wav")
    page.click("#upload")
    page.wait_for_function("window.uppyResult !== undefined", timeout=120_000)
    shots(page, "uploaded")

    result = page.evaluate("window.uppyResult")
    assert result["ok"], result
    assert page.text_content("#status") == "done"
    assert result["url"].startswith(f"{uppy_stack.base}{TUS}")
    assert_recorded(uppy_stack, call_log_id, upload_id_of(result["url"]), data)


def test_a_page_of_an_origin_cors_origins_does_not_name_gets_nothing_through(
    uppy_stack, page_server, browser_context, tmp_path
):
    call_log_id = uppy_stack.new_call_log()
    recording(tmp_path / "call.wav", MIB, seed=22)

    # 127.0.0.1:PORT is another origin than the allowed localhost:PORT.
    page = open_page(browser_context, f"http://127.0.0.1:{page_server}", uppy_stack, call_log_id)
    page.set_input_files("#file", tmp_path / "call.wav")
    page.click("#upload")
    page.wait_for_function("window.uppyResult !== undefined", timeout=60_000)

    result = page.evaluate("window.uppyResult")
    assert not result["ok"] and result["url"] is None
    assert uppy_stack.api(f"/api/call-logs/{call_log_id}").json()["recording"] is None
