"""The hostile suite: what an attacker, a broken phone or an outage does to a real server.

Each test speaks to a real gunicorn (`make run`'s embedded mode unless a test asks for more), because
cut-off and slow bodies, chunked framing and replayed cookies only exist on a real socket. `serve()`
starts one with extra settings; `server` is a shared one for tests that need nothing special.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.server import Server, start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    """An embedded-mode gunicorn shared by a module's tests."""
    yield from start_server(tmp_path_factory.mktemp("hostile"))


@pytest.fixture
def serve(tmp_path):
    """serve(**settings): a gunicorn of this test's own, with extra environment settings."""
    started = []

    def serve(**settings: str | None) -> Server:
        generator = start_server(tmp_path / f"server{len(started)}", **settings)
        started.append(generator)
        return next(generator)

    yield serve
    for generator in started:
        generator.close()
