"""The body middleware: a body shorter than its Content-Length, or one whose connection breaks, is never
taken for a whole one."""

from __future__ import annotations

import io

import pytest

from edcrm.routes.bodies import IncompleteBody, WholeBodyMiddleware


class Breaking:
    """A server's input stream that gives `data`, then raises `error`."""

    def __init__(self, data: bytes, error: Exception):
        self._data, self._error = io.BytesIO(data), error

    def read(self, size: int = -1) -> bytes:
        return self._data.read(size) or self._raise()

    def _raise(self):
        raise self._error


def wrapped(environ: dict):
    """wsgi.input as the app behind the middleware sees it."""
    seen = {}

    def app(environ, start_response):
        seen["input"] = environ["wsgi.input"]
        return []

    WholeBodyMiddleware(app)(environ, None)
    return seen["input"]


def test_a_short_body_raises_as_its_end_is_reached():
    stream = wrapped({"wsgi.input": io.BytesIO(b"x" * 10), "CONTENT_LENGTH": "16"})
    assert stream.read(8) == b"x" * 8
    with pytest.raises(IncompleteBody) as raised:
        stream.read()
    assert (raised.value.code, raised.value.name) == (400, "Incomplete Body")


def test_a_whole_body_reads_to_its_length_and_no_further():
    stream = wrapped({"wsgi.input": io.BytesIO(b"0123456789 and the next request"), "CONTENT_LENGTH": "10"})
    assert stream.read() == b"0123456789"
    assert stream.read() == b""


@pytest.mark.parametrize("error", [ConnectionResetError("reset"), OSError("NoMoreData")])
def test_a_chunked_body_whose_connection_breaks_is_incomplete(error):
    environ = {"wsgi.input": Breaking(b"abc", error), "HTTP_TRANSFER_ENCODING": "chunked"}
    stream = wrapped(environ)
    assert stream.read(3) == b"abc"
    with pytest.raises(IncompleteBody):
        stream.read(3)


@pytest.mark.parametrize(
    "environ",
    [{"CONTENT_LENGTH": "100"}, {"HTTP_TRANSFER_ENCODING": "chunked"}],
    ids=["content-length", "chunked"],
)
def test_a_stalled_body_is_left_to_the_body_timeout(environ):
    stream = wrapped({**environ, "wsgi.input": Breaking(b"abc", TimeoutError("timed out"))})
    stream.read(3)
    with pytest.raises(TimeoutError):
        stream.read(3)
