"""A request body that stops arriving ends the request: reading it raises BodyTimeout (408 body_timeout).

The connection's socket gets a read timeout of BODY_TIMEOUT_S (gunicorn hands the app its socket as
environ["gunicorn.socket"]), so a read that waits that long for a byte raises TimeoutError, which the
stream the app reads (wsgi.input, so request.stream, get_json, request.files) turns into BodyTimeout.
Whatever reads a body sees an exception, never a short body: the upload code keeps nothing of it, and a
lock held for the request is released as the exception unwinds.

BodyTimeout is an HTTPException on purpose, not an OSError: werkzeug's LimitedStream reads an OSError as
the client having gone (400), and storage code would take it for an outage (503).

The bytes gunicorn's event loop reads before a thread takes the request (the head and the start of the
body, see edcrm.gunicorn_worker) are timed there, with the same limit.
"""

from __future__ import annotations

import logging
import socket

from flask import Flask, current_app, request
from werkzeug.exceptions import RequestTimeout

from .routes.errors import handle_http_exception

log = logging.getLogger(__name__)


class BodyTimeout(RequestTimeout):
    """The client sent no byte of its body for BODY_TIMEOUT_S seconds."""

    name = "Body Timeout"  # the API's code: body_timeout

    def __init__(self, seconds: float):
        super().__init__(
            f"The request body stopped arriving: no byte came for {seconds:g} seconds. Send it again."
        )


class TimedInput:
    """wsgi.input, with a read that times out raising BodyTimeout instead of TimeoutError."""

    def __init__(self, stream, seconds: float):
        self._stream = stream
        self._seconds = seconds

    def _call(self, method: str, *args):
        try:
            return getattr(self._stream, method)(*args)
        except TimeoutError:  # socket.timeout is TimeoutError
            raise BodyTimeout(self._seconds) from None

    def read(self, *args) -> bytes:
        return self._call("read", *args)

    def readline(self, *args) -> bytes:
        return self._call("readline", *args)

    def readlines(self, *args) -> list[bytes]:
        return self._call("readlines", *args)

    def __iter__(self):
        return iter(self.readline, b"")

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()


class BodyTimeoutMiddleware:
    """Sets the connection's read timeout and wraps wsgi.input (see the module's docstring)."""

    def __init__(self, wsgi_app, seconds: float):
        self.wsgi_app = wsgi_app
        self.seconds = seconds

    def __call__(self, environ, start_response):
        sock = environ.get("gunicorn.socket")
        if isinstance(sock, socket.socket):
            sock.settimeout(self.seconds)
        if "wsgi.input" in environ:
            environ["wsgi.input"] = TimedInput(environ["wsgi.input"], self.seconds)
        return self.wsgi_app(environ, start_response)


def _answer(error: BodyTimeout):
    log.warning(
        "%s %s from %s: body stalled for %ss, cut off",
        request.method,
        request.path,
        request.remote_addr,
        current_app.config["BODY_TIMEOUT_S"],
    )
    return handle_http_exception(error)


def init_app(app: Flask) -> None:
    # Flask's documented way to wrap its WSGI app, which mypy takes for overwriting a method.
    app.wsgi_app = BodyTimeoutMiddleware(app.wsgi_app, app.config["BODY_TIMEOUT_S"])  # type: ignore[method-assign]
    app.register_error_handler(BodyTimeout, _answer)
