"""Errors: JSON for /api/ (the contract's `{"error": {"code", "message"}}`), pages for the rest."""

from __future__ import annotations

import logging

from flask import Flask, jsonify, render_template, request
from werkzeug.exceptions import HTTPException, InternalServerError

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error answered as JSON: raise it from any route or domain-facing helper."""

    def __init__(self, status: int, code: str, message: str, **extra):
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra

    def to_response(self):
        body = {"error": {"code": self.code, "message": self.message, **self.extra}}
        return jsonify(body), self.status


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


def handle_unexpected(error: Exception):
    log.exception("unhandled error on %s %s", request.method, request.path)
    return handle_http_exception(InternalServerError())


def init_app(app: Flask) -> None:
    app.register_error_handler(ApiError, ApiError.to_response)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(Exception, handle_unexpected)
