"""Fixtures of the tus protocol tests: a telecaller, their call log, and a client that speaks tus."""

from __future__ import annotations

import base64

import pytest

from tests.support.people import bearer
from tests.support.recordings import make_call_log

TUS = {"Tus-Resumable": "1.0.0"}
BASE = "/api/recordings/tus/"


def metadata(**pairs: object) -> str:
    """Upload-Metadata of pairs (None: a key without a value)."""
    return ",".join(
        key if value is None else f"{key} {base64.b64encode(str(value).encode()).decode()}"
        for key, value in pairs.items()
    )


class Tus:
    """The Flask test client as a tus client: every request with Tus-Resumable and the bearer token."""

    def __init__(self, client, auth: dict[str, str]):
        self.client, self.auth = client, auth

    def headers(self, extra: dict[str, str] | None) -> dict[str, str]:
        return {**TUS, **self.auth, **(extra or {})}

    def create(self, call_log_id: int | None, length: int | None = None, *, headers=None, data=None, **meta):
        sent = {}
        if call_log_id is not None:
            sent["call_log_id"] = call_log_id
        sent.update(meta)
        extra = {"Upload-Metadata": metadata(**sent)} if sent else {}
        if length is None:
            extra["Upload-Defer-Length"] = "1"
        else:
            extra["Upload-Length"] = str(length)
        if data is not None:
            extra["Content-Type"] = "application/offset+octet-stream"
        return self.client.post(BASE, headers=self.headers({**extra, **(headers or {})}), data=data)

    def new(self, call_log_id: int | None, length: int | None = None, **kwargs) -> str:
        """A created upload's URL (its path)."""
        response = self.create(call_log_id, length, **kwargs)
        assert response.status_code == 201, response.get_data(as_text=True)
        return response.headers["Location"].removeprefix("http://localhost")

    def head(self, url: str, headers=None):
        return self.client.head(url, headers=self.headers(headers))

    def patch(self, url: str, offset: int, data: bytes, headers=None):
        extra = {"Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"}
        return self.client.patch(url, headers=self.headers({**extra, **(headers or {})}), data=data)

    def delete(self, url: str, headers=None):
        return self.client.delete(url, headers=self.headers(headers))


@pytest.fixture
def call_log(branch, telecaller):
    return make_call_log(branch, telecaller)


@pytest.fixture
def auth(telecaller):
    return bearer(telecaller)


@pytest.fixture
def tus(client, auth):
    return Tus(client, auth)
