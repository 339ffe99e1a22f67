"""414 and 431: a request whose URL or headers are too long is refused before any route reads them.

gunicorn refuses the longest ones itself, before the app sees them, with a page of its own
(gunicorn.conf.py: a request line over 8190 bytes is 414, a header line over 8190 bytes or more than 100
headers is 431). Below those, the app answers the contract's error (JSON under /api/, the error page
elsewhere) for a URL over MAX_URL_BYTES or headers adding up to more than MAX_HEADER_BYTES: room for
every URL and header the API and the pages make, and a bound on what a request makes the app parse.
"""

from __future__ import annotations

from flask import Flask, request
from werkzeug.exceptions import RequestHeaderFieldsTooLarge, RequestURITooLarge

#: The path and query string as sent (percent-encoded), in bytes.
MAX_URL_BYTES = 4096
#: Every header line (name, value and framing) added up, in bytes.
MAX_HEADER_BYTES = 16 * 1024


def url_bytes(environ: dict) -> int:
    """The length of the request's target as the client sent it."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")  # gunicorn, werkzeug's server
    if raw is not None:
        return len(raw)
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    query = environ.get("QUERY_STRING", "")
    # PATH_INFO is decoded (latin-1 of the bytes): its length is at most that of the encoded path.
    return len(path.encode("latin-1", "replace")) + (len(query) + 1 if query else 0)


def header_bytes() -> int:
    return sum(len(name) + len(value) + 4 for name, value in request.headers.items())


def check_request_size() -> None:
    if url_bytes(request.environ) > MAX_URL_BYTES:
        raise RequestURITooLarge(f"The URL is longer than {MAX_URL_BYTES} bytes.")
    if header_bytes() > MAX_HEADER_BYTES:
        message = f"The request's headers add up to more than {MAX_HEADER_BYTES} bytes."
        raise RequestHeaderFieldsTooLarge(message)


def init_app(app: Flask) -> None:
    """Check before the other before_request functions (CSRF reads forms, sign-in reads cookies), only
    after edcrm.metrics' timer, so that a refused request is timed too."""
    funcs = app.before_request_funcs.setdefault(None, [])
    timers = [i for i, func in enumerate(funcs) if func.__module__ == "edcrm.metrics"]
    funcs.insert(timers[-1] + 1 if timers else 0, check_request_size)
