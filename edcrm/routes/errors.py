"""Errors: JSON for /api/ (the contract's `{"error": {"code", "message"}}`), pages for the rest.

A dependency that is down (the storage, the database, the broker) is answered here, once for every
route: 503 with `Retry-After`, the code naming which one, and the request's transaction rolled back, so
that it changes nothing. Domain code lets those errors rise as they are; only this module knows what
each family of them means to a client.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import dramatiq.errors
import redis.exceptions
import sqlalchemy.exc
from flask import Flask, Response, current_app, g, jsonify, render_template, request
from werkzeug.exceptions import HTTPException, InternalServerError, ServiceUnavailable

from ..storage.base import StorageUnavailable

log = logging.getLogger(__name__)

#: Seconds a client is asked to wait before trying again after a 503.
RETRY_AFTER_S = 10


class ApiError(Exception):
    """An error answered as JSON: raise it from any route or domain-facing helper."""

    def __init__(self, status: int, code: str, message: str, **extra):
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra

    def to_response(self):
        body = {"error": {"code": self.code, "message": self.message, **self.extra}}
        return jsonify(body), self.status


@dataclass(frozen=True)
class Outage:
    """A dependency that is down, as the client is told of it."""

    code: str
    title: str
    message: str


STORAGE_DOWN = Outage(
    "storage_unavailable",
    "File storage unavailable",
    "The file storage cannot be reached right now. Nothing was saved; please try again in a moment.",
)
DATABASE_DOWN = Outage(
    "database_unavailable",
    "Database unavailable",
    "The database cannot be reached right now. Nothing was changed; please try again in a moment.",
)
QUEUE_DOWN = Outage(
    "queue_unavailable",
    "Job queue unavailable",
    "The job queue cannot be reached right now. Nothing was queued; please try again in a moment.",
)

#: OSErrors of the web's own disk (the spools of uploads) that mean it cannot take files now.
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})

_DATABASE_ERRORS = (
    sqlalchemy.exc.OperationalError,  # cannot connect, connection lost, database locked or shutting down
    sqlalchemy.exc.DisconnectionError,
    sqlalchemy.exc.TimeoutError,  # no connection free in the pool in time
)
_BROKER_ERRORS = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    getattr(dramatiq.errors, "BrokerConnectionError", None) or dramatiq.errors.ConnectionError,
)


def _causes(error: BaseException) -> Iterator[BaseException]:
    """error, then the errors it was raised from or while handling (a wrapper keeps its cause)."""
    for _ in range(8):
        yield error
        following = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
        if following is None:
            return
        error = following


def outage_of(error: BaseException) -> Outage | None:
    """The dependency whose being down error shows, or None for any other error."""
    for cause in _causes(error):
        if isinstance(cause, StorageUnavailable):
            return STORAGE_DOWN
        if isinstance(cause, _DATABASE_ERRORS):
            return DATABASE_DOWN
        if isinstance(cause, sqlalchemy.exc.DBAPIError) and cause.connection_invalidated:
            return DATABASE_DOWN
        if isinstance(cause, _BROKER_ERRORS):
            return QUEUE_DOWN
        if isinstance(cause, OSError) and cause.errno in _DISK_FULL:
            return STORAGE_DOWN
    return None


def _snake(name: str) -> str:
    return name.lower().replace(" ", "_").replace("'", "")


def _wants_json() -> bool:
    return request.path.startswith("/api/") or request.path in ("/healthz", "/metrics")


def handle_http_exception(error: HTTPException):
    if not _wants_json():
        return render_template("error.html", error=error), error.code
    response = ApiError(error.code or 500, _snake(error.name), error.description or error.name).to_response()
    if error.code == 405 and error.valid_methods:
        response[0].headers["Allow"] = ", ".join(error.valid_methods)
    return response


def _rollback() -> None:
    """End the request's transaction: what it wrote before the failure is not kept."""
    from ..extensions import db

    try:
        db.session.rollback()
    except Exception:  # the connection may be gone with the database; the session is dropped anyway
        log.debug("rollback after an outage failed", exc_info=True)


def _outage_page(outage: Outage):
    """The 503 page, in the site's layout. With the database down it names no user (which would need a
    query); otherwise it has the signed-in user's navigation, as every page does."""
    context = {"outage": outage, "retry_after": RETRY_AFTER_S}
    if outage is not DATABASE_DOWN:
        try:
            return render_template("unavailable.html", **context)
        except Exception:  # the user could not be read after all: the page without them
            log.warning("the 503 page could not show the user", exc_info=True)
            _rollback()
    # No user to read: Flask-Login's template context would load one from the session. And `error` (a
    # 5xx) tells the layout to look nothing else up.
    g._login_user = current_app.login_manager.anonymous_user()
    error = ServiceUnavailable(outage.message)
    return render_template("unavailable.html", error=error, **context)


def handle_outage(outage: Outage, error: Exception):
    log.warning("%s on %s %s: %s: %s", outage.code, request.method, request.path, type(error).__name__, error)
    _rollback()
    if _wants_json():
        response = ApiError(503, outage.code, outage.message).to_response()
    else:
        response = _outage_page(outage), 503
    return response


def handle_unexpected(error: Exception):
    outage = outage_of(error)
    if outage is not None:
        return handle_outage(outage, error)
    log.exception("unhandled error on %s %s", request.method, request.path)
    return handle_http_exception(InternalServerError())


def add_retry_after(response: Response) -> Response:
    """Every 503 (an outage, a refused job, /healthz) says when to try again."""
    if response.status_code == 503 and "Retry-After" not in response.headers:
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


def init_app(app: Flask) -> None:
    app.register_error_handler(ApiError, ApiError.to_response)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(Exception, handle_unexpected)
    app.after_request(add_retry_after)
