"""Errors: JSON for /api/ (the contract's `{"error": {"code", "message"}}`), pages for the rest.

Domain code raises errors that say what happened and carry its data, never an HTTP status. This module
is the one place that knows what each of them means to a client, for every route at once:

- a refusal (an import or upload rejected, a job in the wrong state) is answered by `REFUSALS`: its
  status, its code, and which of its data the JSON shows beside the message;
- a dependency that is down (the storage, the database, the broker) is 503 with `Retry-After`, the code
  naming which one, and the request's transaction rolled back, so that it changes nothing.

Routes call the domain code and let these errors rise; a page that answers a refusal with a page of its
own (a form shown again) catches it and takes the status from `status_of`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from flask import Flask, Response, g, jsonify, render_template, request
from werkzeug.exceptions import (
    HTTPException,
    InternalServerError,
    MethodNotAllowed,
    ServiceUnavailable,
    default_exceptions,
)

from ..extensions import db, login_manager
from ..imports.upload import (
    EmptyFile,
    FileTooLarge,
    ImportRejected,
    InvalidTelecallers,
    NotCsvFile,
    NoTelecallers,
)
from ..jobs import BrokerUnavailable, JobNotFound, JobStateConflict, RetryRefused
from ..recordings.errors import (
    BodyEndedEarly,
    ChecksumMismatch,
    ChecksumUnsupported,
    ChunksMissing,
    ConcatInvalid,
    InvalidUpload,
    LengthConflict,
    NotARecording,
    OffsetMismatch,
    TooLarge,
    TusChecksumMismatch,
    UploadExpired,
    UploadLocked,
    UploadRejected,
    WrongState,
)
from .outages import DATABASE_DOWN, QUEUE_DOWN, RETRY_AFTER_S, Outage, outage_of

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error answered as JSON: raise it from any route or domain-facing helper. `headers` go with the
    answer (a tus 409's `Upload-Offset`)."""

    def __init__(
        self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None, **extra
    ):
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra
        self.headers = headers or {}

    def to_response(self):
        body = {"error": {"code": self.code, "message": self.message, **self.extra}}
        response = jsonify(body)
        response.headers.update(self.headers)
        return response, self.status


def _shown(*names: str) -> Callable[[Exception], dict]:
    """The error's attributes `names`, shown beside the message."""
    return lambda error: {name: getattr(error, name) for name in names}


def _no_details(error: Exception) -> dict:
    return {}


def _no_headers(error: Exception) -> dict[str, str]:
    return {}


@dataclass(frozen=True)
class Answer:
    """How the API answers a domain error: a status, a snake_case code, what else the JSON shows and the
    headers that go with it."""

    status: int
    code: str
    details: Callable[[Exception], dict] = _no_details
    message: Callable[[Exception], str] = str
    headers: Callable[[Exception], dict[str, str]] = _no_headers


def _current_offset(error: Exception) -> dict[str, str]:
    """A tus client resumes from the Upload-Offset of a 409 without another HEAD."""
    assert isinstance(error, OffsetMismatch)
    return {"Upload-Offset": str(error.offset)}


def _job_state(error: Exception) -> dict:
    assert isinstance(error, JobStateConflict)
    return {"state": error.job.state.value}


#: Each family of refusals and its members. A class missing here is answered as its nearest listed base.
REFUSALS: dict[type[Exception], Answer] = {
    # Lead imports (edcrm.imports.upload).
    ImportRejected: Answer(422, "import_rejected"),
    InvalidTelecallers: Answer(422, "invalid_telecallers", _shown("telecaller_ids")),
    NoTelecallers: Answer(422, "no_telecallers"),
    EmptyFile: Answer(422, "empty_file"),
    FileTooLarge: Answer(413, "file_too_large"),
    NotCsvFile: Answer(415, "not_csv"),
    # Recording uploads (edcrm.recordings.uploads).
    UploadRejected: Answer(422, "invalid_upload"),
    InvalidUpload: Answer(422, "invalid_upload"),
    TooLarge: Answer(413, "too_large", _shown("limit")),
    ChecksumMismatch: Answer(422, "checksum_mismatch", _shown("index")),
    WrongState: Answer(409, "upload_state_conflict"),
    ChunksMissing: Answer(409, "chunks_missing", _shown("missing")),
    # tus uploads (edcrm.recordings.tus): the statuses the tus 1.0 protocol gives them.
    OffsetMismatch: Answer(409, "offset_mismatch", _shown("offset"), headers=_current_offset),
    UploadLocked: Answer(423, "upload_locked"),
    TusChecksumMismatch: Answer(460, "checksum_mismatch"),
    ChecksumUnsupported: Answer(400, "checksum_unsupported"),
    UploadExpired: Answer(410, "upload_expired"),
    LengthConflict: Answer(400, "length_conflict", _shown("changed")),
    BodyEndedEarly: Answer(400, "incomplete_body"),
    ConcatInvalid: Answer(400, "concat_invalid"),
    NotARecording: Answer(422, "not_a_recording", _shown("reason")),
    # Jobs (edcrm.jobs.ledger).
    JobNotFound: Answer(404, "not_found", message=lambda error: f"No job {error}."),
    JobStateConflict: Answer(409, "wrong_state", _job_state),
    # The right state, but a retry could only end cancelled (what the job works on is gone).
    RetryRefused: Answer(409, "not_retryable", _job_state),
    # A dependency that refused the work (the import's, the upload's and the retry's job not sent).
    BrokerUnavailable: Answer(503, "queue_unavailable"),
}


def answer_of(error: Exception) -> Answer:
    """The answer to error: its class's, or that of the nearest of its bases that has one."""
    for cls in type(error).__mro__:
        answer = REFUSALS.get(cls)
        if answer is not None:
            return answer
    raise LookupError(f"{type(error).__name__} is not a refusal that edcrm.routes.errors answers")


def status_of(error: Exception) -> int:
    """The HTTP status of a refusal, for a page that answers it with a page of its own."""
    return answer_of(error).status


def api_error_of(error: Exception) -> ApiError:
    """A refusal as the API answers it."""
    answer = answer_of(error)
    return ApiError(
        answer.status,
        answer.code,
        answer.message(error),
        headers=answer.headers(error),
        **answer.details(error),
    )


def _snake(name: str) -> str:
    return name.lower().replace(" ", "_").replace("'", "")


def _wants_json() -> bool:
    return request.path.startswith("/api/") or request.path in ("/healthz", "/metrics")


def handle_http_exception(error: HTTPException):
    if not _wants_json():
        return render_template("error.html", error=error), error.code
    response = ApiError(error.code or 500, _snake(error.name), error.description or error.name).to_response()
    if isinstance(error, MethodNotAllowed) and error.valid_methods:
        response[0].headers["Allow"] = ", ".join(error.valid_methods)
    return response


def _rollback() -> None:
    """End the request's transaction: what it wrote before the failure is not kept."""
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
    g._login_user = login_manager.anonymous_user()
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


def handle_refusal(error: Exception):
    """A refusal of the domain code: its JSON under /api/, the error page with its status elsewhere."""
    if _wants_json():
        return api_error_of(error).to_response()
    answer = answer_of(error)
    page_error = default_exceptions.get(answer.status, HTTPException)(answer.message(error))
    return render_template("error.html", error=page_error), answer.status


def handle_unavailable(error: BrokerUnavailable):
    """The job queue refused a job, and the domain code undid what it had started: 503 on the API with
    the error's own words, the outage page on the web."""
    if _wants_json():
        return api_error_of(error).to_response()
    return handle_outage(QUEUE_DOWN, error)


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
    for family in (ImportRejected, UploadRejected, JobNotFound, JobStateConflict):
        app.register_error_handler(family, handle_refusal)
    app.register_error_handler(BrokerUnavailable, handle_unavailable)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(Exception, handle_unexpected)
    app.after_request(add_retry_after)
