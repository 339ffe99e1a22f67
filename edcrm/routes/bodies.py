"""Request bodies shorter than their Content-Length are refused, never taken for whole ones.

gunicorn sets `wsgi.input_terminated`, so werkzeug reads its stream as it is: a client that announces
`Content-Length: 16044`, sends 8,000 bytes and closes its side reaches the end of the stream, and the
8,000 bytes would pass for the whole body (a chunk, a one-shot recording, a CSV). This WSGI middleware
counts what is read against the Content-Length and raises `IncompleteBody` (400 `incomplete_body`,
answered by the ordinary HTTP error handlers) as soon as the stream ends early or the connection breaks
while the body is read. A handler that reads the body stores nothing until the read completed.

Bodies sent with `Transfer-Encoding: chunked` have no length to count against; a connection that breaks
in one is refused the same way.

The app's `Request` spools the file parts of forms in the process's spool directory (edcrm.spool) and
closes those of a form whose body was cut off.
"""

from __future__ import annotations

from flask import Flask
from flask import Request as FlaskRequest
from werkzeug.exceptions import ClientDisconnected
from werkzeug.wsgi import LimitedStream

from .. import spool

MESSAGE = "The request body ended before all of it arrived: the client went away. Nothing of it was kept."


class IncompleteBody(ClientDisconnected):
    """The client sent less than it announced, or its connection broke mid-body."""

    name = "Incomplete Body"  # the error handlers answer the code `incomplete_body`
    description = MESSAGE


class _WholeBody(LimitedStream):
    """wsgi.input, at most Content-Length bytes, which must all arrive."""

    def on_disconnect(self, error: Exception | None = None) -> None:
        if isinstance(error, TimeoutError):
            raise error  # a stalled client: the body timeout's to answer
        raise IncompleteBody()


class _UnbrokenBody:
    """wsgi.input of a chunked body: a connection that breaks while it is read is an incomplete body."""

    def __init__(self, stream):
        self._stream = stream

    def _guard(self, method, *args):
        try:
            return method(*args)
        except TimeoutError:
            raise  # a stalled client: the body timeout's to answer
        except OSError as error:  # gunicorn's NoMoreData, a reset connection
            raise IncompleteBody() from error
        except Exception as error:
            if type(error).__module__.startswith("gunicorn.http"):  # a malformed chunk
                raise IncompleteBody() from error
            raise

    def read(self, *args):
        return self._guard(self._stream.read, *args)

    def readline(self, *args):
        return self._guard(self._stream.readline, *args)

    def readlines(self, *args):
        return self._guard(self._stream.readlines, *args)

    def __iter__(self):
        return iter(self.readline, b"")

    def __getattr__(self, name: str):  # close() and the like, as the server's stream has them
        return getattr(self._stream, name)


def _content_length(environ) -> int | None:
    value = environ.get("CONTENT_LENGTH", "")
    if value.isascii() and value.isdigit():
        return int(value)
    return None


class WholeBodyMiddleware:
    """Wraps wsgi.input of every request with a body (see the module's docstring)."""

    def __init__(self, wsgi_app):
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        stream = environ.get("wsgi.input")
        if stream is not None:
            length = _content_length(environ)
            if length is not None:
                environ["wsgi.input"] = _WholeBody(stream, length)
            elif "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
                environ["wsgi.input"] = _UnbrokenBody(stream)
        return self.wsgi_app(environ, start_response)


class Request(FlaskRequest):
    """Form file parts go to spool files; a parse that fails part-way (a cut-off body, a form over its
    limit) closes the ones it opened, instead of leaving them to the garbage collector."""

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        part = spool.spooled_file("edcrm-form-")
        self.__dict__.setdefault("_edcrm_parts", []).append(part)
        return part

    def _load_form_data(self) -> None:
        try:
            super()._load_form_data()
        except BaseException:
            for part in self.__dict__.pop("_edcrm_parts", []):
                part.close()
            raise


def init_app(app: Flask) -> None:
    # Flask documents wrapping wsgi_app in middleware this way; its typing declares wsgi_app a method.
    app.wsgi_app = WholeBodyMiddleware(app.wsgi_app)  # type: ignore[method-assign]
    app.request_class = Request
