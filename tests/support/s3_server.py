"""moto's S3 server on a loopback port, spoken to over real HTTP (boto3 is not patched), for tests.

Import the fixture into a test module (`from s3_server import s3_server`) and make buckets with
`s3_server.create_bucket()`. The server runs in a thread of the test process, so its buckets survive
`with s3_server.stopped():`, which takes the endpoint down (connections refused) and brings it back
on the same port, as an outage of a real S3 would.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import uuid
from typing import TYPE_CHECKING

import boto3
import pytest
from botocore.retries.standard import ExponentialBackoff

from edcrm.storage.s3 import client_config

if TYPE_CHECKING:
    from werkzeug.serving import BaseWSGIServer

#: Dummy credentials and region: moto checks neither, but boto3 refuses to sign without them.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    # Never ask an EC2 metadata service or read the developer's ~/.aws for credentials.
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


#: How often the server's loop looks for a shutdown (s): every stop waits for it (socketserver's 0.5 s
#: default would be half a second per outage a test plays and per module), and idle it costs nothing.
POLL_INTERVAL = 0.01


class MotoS3Server:
    """moto's S3 app served by werkzeug in a thread (as moto's ThreadedMotoServer does, with a shorter
    shutdown poll), that can be stopped and started again on the same port."""

    #: What the parametrized `s3_endpoint` fixture (tests/support/rgw.py) calls it.
    name = "moto"
    #: The AWS variables a process needs to use it (moto checks none of them).
    aws_env = AWS_ENV

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._client = None

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        # moto loads slowly: only when a test needs it.
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        if self._server is None:
            app = DomainDispatcherApplication(create_backend_app)
            server = make_server(
                "127.0.0.1", self.port, app, threaded=True, request_handler=MotoRequestHandler
            )
            thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": POLL_INTERVAL}, daemon=True
            )
            thread.start()
            self._server, self._thread = server, thread

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            if self._thread is not None:
                self._thread.join()
            self._server = None

    @contextlib.contextmanager
    def stopped(self):
        """The endpoint is down inside the block, and back (with its buckets) after it."""
        self.stop()
        try:
            yield self
        finally:
            self.start()

    def client(self):
        """A plain boto3 client on the server, for a test's own setup and checks: one per server, as a
        client costs a tenth of a second to make (boto3 clients are thread-safe)."""
        if self._client is None:
            session = boto3.session.Session()
            self._client = session.client("s3", endpoint_url=self.endpoint_url, config=client_config())
        return self._client

    def create_bucket(self, name: str | None = None) -> str:
        """A new bucket (a fresh name per test by default: the server's state outlives a test)."""
        name = name or f"edcrm-test-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="module")
def s3_server():
    """moto's S3 server for this module's tests, with dummy AWS credentials in the environment.

    botocore retries a request S3 fails (a refused connection, a 5xx) as often as the app's client
    config says, but without its backoff sleeps: a test that takes S3 down would otherwise wait a few
    tenths of a second on every request it makes of it."""
    # The server logs a line per request on the werkzeug logger; tests read them only on failure.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    with pytest.MonkeyPatch.context() as monkeypatch:
        for name, value in AWS_ENV.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("AWS_PROFILE", raising=False)
        monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0)
        server = MotoS3Server()
        server.start()
        try:
            yield server
        finally:
            server.stop()
