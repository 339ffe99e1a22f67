"""CORS for /api/: the web origins of CORS_ORIGINS may call the API from their pages (Uppy, tus-js-client
in a browser); any other origin gets no CORS header at all, so its browser keeps the answer from it.

- A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) from an allowed origin is
  answered here, before any route (it carries no token): 204 with the origin echoed, the methods and
  headers the API takes (tus's among them) and how long the browser may cache that (`Max-Age`).
- Every other /api/ answer to an allowed origin names it in `Access-Control-Allow-Origin` and exposes
  the headers a client reads (`Location`, tus's `Upload-Offset`, `Upload-Length`, ...).
- `Vary: Origin` is on every /api/ answer once CORS_ORIGINS is set: what a cache keeps depends on it.

No credentials: the API takes bearer tokens, never cookies, so `Access-Control-Allow-Credentials` is not
sent and a page's session cookies are of no use to it.
"""

from __future__ import annotations

from flask import Flask, Response, current_app, request

from ..config import cors_origins

ALLOW_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
ALLOW_HEADERS = (
    "Authorization",
    "Content-Type",
    "Tus-Resumable",
    "Upload-Length",
    "Upload-Metadata",
    "Upload-Offset",
    "Upload-Checksum",
    "Upload-Concat",
    "Upload-Defer-Length",
    "X-HTTP-Method-Override",
    "X-Requested-With",
    "Idempotency-Key",
    "X-Chunk-SHA256",
)
EXPOSE_HEADERS = (
    "Location",
    "Upload-Offset",
    "Upload-Length",
    "Upload-Expires",
    "Upload-Metadata",
    "Upload-Concat",
    "Upload-Defer-Length",
    "Tus-Resumable",
    "Tus-Version",
    "Tus-Extension",
    "Tus-Max-Size",
    "Tus-Checksum-Algorithm",
    "Retry-After",
    "WWW-Authenticate",
)
#: Seconds a browser may keep a preflight's answer (Chromium caps it at 7200).
MAX_AGE_S = 7200


def _applies() -> bool:
    return request.path.startswith("/api/")


def allowed_origins() -> tuple[str, ...]:
    configured = current_app.config.get("CORS_ORIGINS") or ()
    if isinstance(configured, str):  # set as the environment writes it (a test's override)
        configured = cors_origins(configured)
    return tuple(configured)


def allowed_origin() -> str | None:
    """The request's Origin if CORS_ORIGINS allows it, else None."""
    origin = request.headers.get("Origin")
    if not origin:
        return None
    origins = allowed_origins()
    if "*" in origins or origin.rstrip("/").lower() in origins:
        return origin
    return None


def answer_preflight() -> Response | None:
    """A preflight from an allowed origin, answered before the route (which would want a token)."""
    if not _applies() or request.method != "OPTIONS":
        return None
    if "Access-Control-Request-Method" not in request.headers:
        return None  # a plain OPTIONS (tus's discovery): the route answers it
    origin = allowed_origin()
    if origin is None:
        return None  # the route answers without CORS headers: the browser refuses the request
    response = current_app.response_class(status=204)
    response.headers.pop("Content-Type", None)
    response.headers["Access-Control-Allow-Origin"] = origin
    response.headers["Access-Control-Allow-Methods"] = ", ".join(ALLOW_METHODS)
    response.headers["Access-Control-Allow-Headers"] = ", ".join(ALLOW_HEADERS)
    response.headers["Access-Control-Max-Age"] = str(MAX_AGE_S)
    return response


def add_cors_headers(response: Response) -> Response:
    if not _applies() or not allowed_origins():
        return response
    response.vary.add("Origin")
    origin = allowed_origin()
    if origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
        if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
            response.headers["Access-Control-Expose-Headers"] = ", ".join(EXPOSE_HEADERS)
    return response


def init_app(app: Flask) -> None:
    """Preflights are answered before the other before_request functions that read the request (a
    preflight has no token, no CSRF token, no body), only after the timer and the size check."""
    funcs = app.before_request_funcs.setdefault(None, [])
    after = [i for i, func in enumerate(funcs) if func.__module__ in ("edcrm.metrics", "edcrm.routes.limits")]
    funcs.insert(after[-1] + 1 if after else 0, answer_preflight)
    app.after_request(add_cors_headers)
