"""Request metrics, counted as each request is answered in this process.

- `edcrm_http_requests_total{method,endpoint,status}` and `edcrm_http_request_duration_seconds{method,
  endpoint}`: every request, labelled by its Flask endpoint (`api.get_import`), never by its raw path,
  so that ids in URLs cannot make the label set grow without bound;
- `edcrm_upload_bytes_total{kind}`: bytes of uploads received and stored (`csv`, `recording_chunk`,
  `recording`), counted where they are streamed (edcrm.imports.upload, edcrm.recordings.uploads).
"""

from __future__ import annotations

import time

from flask import Flask, Response, request
from prometheus_client import Counter, Histogram

#: HTTP methods kept as they are in labels; anything else a client invents is counted as "other".
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: The endpoint label of a request that matched no route (404, 405).
UNMATCHED = "unmatched"
UPLOAD_KINDS = ("csv", "recording_chunk", "recording")

HTTP_REQUESTS = Counter(
    "edcrm_http_requests",
    "HTTP requests answered, by method, Flask endpoint and status code.",
    ["method", "endpoint", "status"],
    registry=None,
)
HTTP_DURATION = Histogram(
    "edcrm_http_request_duration_seconds",
    "Time from a request's arrival to its response (headers; a streamed body is not included).",
    ["method", "endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
    registry=None,
)
UPLOAD_BYTES = Counter(
    "edcrm_upload_bytes",
    "Bytes of uploads received and stored: csv (lead imports), recording_chunk, recording (one-shot).",
    ["kind"],
    registry=None,
)
for _kind in UPLOAD_KINDS:  # present (at 0) from the start: rate() and alerts need no absent()
    UPLOAD_BYTES.labels(_kind)


def count_upload(kind: str, size: int) -> None:
    """size bytes of an upload of this kind were received and stored."""
    UPLOAD_BYTES.labels(kind).inc(size)


_STARTED = "edcrm.metrics.started"


def _start_timer() -> None:
    request.environ[_STARTED] = time.perf_counter()


def _count_request(response: Response) -> Response:
    method = request.method if request.method in KNOWN_METHODS else "other"
    endpoint = request.endpoint or UNMATCHED
    HTTP_REQUESTS.labels(method, endpoint, str(response.status_code)).inc()
    started = request.environ.get(_STARTED)
    if started is not None:
        HTTP_DURATION.labels(method, endpoint).observe(time.perf_counter() - started)
    return response


def init_app(app: Flask) -> None:
    """Count every request of app. The timer starts before any other before_request function (CSRF,
    authentication), so that a request they refuse is timed as well."""
    app.before_request_funcs.setdefault(None, []).insert(0, _start_timer)
    app.after_request(_count_request)
