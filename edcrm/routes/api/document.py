"""The OpenAPI document of the HTTP API, generated: spectree builds the operations, parameters and
schemas from what each route declares (edcrm.routes.api.spec), and this module adds, in one place, what
spectree cannot say:

- the answers every operation may give before or around its view (408, 414 and 431 from the request
  limits, 400 for a body cut short, 503 with Retry-After for a dependency down), and the shared error
  answers, kept once under components/responses;
- path parameters (spectree knows converters, not the ids behind them);
- per operation: response headers, links between operations, and bodies that are not JSON
  (edcrm.routes.api.supplement).
"""

from __future__ import annotations

import copy
from typing import Any

from flask import Flask

from ...models.recording import MAX_CHUNKS
from ...permissions import MAX_ID
from ..converters import JobIdConverter
from . import spec
from .schemas.base import UPLOAD_ID
from .supplement import EXTRA_OPERATIONS, RETRY_AFTER, SUPPLEMENT, TEXT, TUS_OPERATIONS, TUS_RESUMABLE

ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}

INFO = {
    "title": "edcrm API",
    "version": "0.1.0",
    "summary": "Lead imports, leads, call logs and health of the edcrm education CRM.",
    "description": (
        "Every /api/ route except POST /api/auth/token, GET /api/openapi.json and GET /api/docs takes "
        '`Authorization: Bearer TOKEN` and answers JSON. Errors are `{"error": {"code", "message"}}`: '
        "400 a body cut short (`incomplete_body`: nothing of it is kept), 401 no or bad token, 403 "
        "not yours, "
        "404 unknown, 405 a method the path does not take (with `Allow`), 408 a head or body that stopped "
        "arriving for `BODY_TIMEOUT_S` seconds (`request_timeout`, `body_timeout`), 409 conflict, 413 too "
        "large, 414 a URL over 4096 bytes, 415 wrong type, 422 invalid (with `fields` naming each "
        "bad field), "
        "429 too many failed sign-ins (with `Retry-After`), 431 headers over 16 KiB, 503 a dependency down "
        "(`database_unavailable`, `storage_unavailable`, `queue_unavailable`, with `Retry-After`: nothing "
        "was changed, try again); any other 5xx is a bug. In front of the app, gunicorn answers a request "
        "line over 8190 bytes (414), a header line over 8190 bytes or more than 100 headers (431) and a "
        "request it cannot parse (400) with a text/html page of its own.\n\n"
        "Ids are integers of 1..2147483647 (2^31-1); in a path they are ASCII digits, and any other path is "
        "a 404. Every integer, in a path, a query string or a body, is range-checked: out of range is a 404 "
        "in a path and a 422 elsewhere. In JSON a whole number may be written as a float (`86400.0` is "
        "86400); `null` stands for an absent optional field. In a query string an integer is ASCII digits "
        "without leading zeros; an empty value (`limit=`) is invalid for an integer, an enum or a "
        "cursor, and "
        "means no filter for a free-text filter. Cursors are opaque to clients (send back the `next` of a "
        "page), and of the exact form documented for each: any other string is a 422. Times are ISO 8601 UTC."
    ),
}


def _error_answer(description: str, **more: Any) -> dict[str, Any]:
    return {"description": description, **more, "content": ERROR}


def _gunicorn_too(description: str) -> dict[str, Any]:
    content = {**ERROR, "text/html": TEXT}
    return {"description": description, "content": content}


#: The shared answers: a route names the first six through edcrm.routes.api.spec's constants.
RESPONSES: dict[str, dict[str, Any]] = {
    "Unauthorized": _error_answer(
        spec.UNAUTHORIZED[1],
        headers={"WWW-Authenticate": {"schema": {"type": "string"}, "example": 'Bearer realm="edcrm"'}},
    ),
    "Forbidden": _error_answer(spec.FORBIDDEN[1]),
    "NotFound": _error_answer(spec.NOT_FOUND[1]),
    "TooLarge": _error_answer(spec.TOO_LARGE[1]),
    "UnsupportedMediaType": _error_answer(spec.UNSUPPORTED_MEDIA_TYPE[1]),
    "ValidationFailed": _error_answer(spec.VALIDATION_FAILED[1]),
    "IncompleteBody": _error_answer(
        "The body ended before its `Content-Length`, or its connection broke while it was read: the client "
        "went away (`incomplete_body`). Nothing of it is kept."
    ),
    "UriTooLong": _gunicorn_too(
        "The URL (path and query string) is over 4096 bytes (`request_uri_too_long`). A request line over "
        "8190 bytes is refused by gunicorn before the app, with a text/html page."
    ),
    "HeadersTooLarge": _gunicorn_too(
        "The request's headers add up to more than 16 KiB (`request_header_fields_too_large`). A header line "
        "over 8190 bytes or more than 100 headers are refused by gunicorn before the app, with a "
        "text/html page."
    ),
    "RequestTimeout": _error_answer(
        "The request's head, or its body, stopped arriving for `BODY_TIMEOUT_S` seconds (`request_timeout`, "
        "`body_timeout`): the connection is closed and nothing of the request is kept."
    ),
    "DatabaseUnavailable": _error_answer(
        "The database cannot be reached (`database_unavailable`); nothing was changed. Try again after "
        "`Retry-After` seconds.",
        headers=RETRY_AFTER,
    ),
}
_SHARED = {answer["description"]: name for name, answer in RESPONSES.items()}
#: Answered around every operation's view, whatever it declares.
_AROUND = {"408": "RequestTimeout", "414": "UriTooLong", "431": "HeadersTooLarge"}

HEADERS = {
    "RetryAfter": {
        "description": "Seconds to wait before trying again.",
        "required": True,
        "schema": {"type": "integer", "minimum": 0},
        "example": 10,
    }
}

_ID_IN_PATH = "ASCII digits without a leading zero; a path with any other id is a 404."
_ID = {"type": "integer", "minimum": 1, "maximum": MAX_ID}
_UPLOAD_ID = ("The opaque upload id (32 hexadecimal digits).", {"type": "string", "pattern": UPLOAD_ID})
_JOB_ID = "The Dramatiq message id of the job."

#: Path parameters by name: (description, schema); a route's converter matches exactly these.
PATH_PARAMETERS: dict[str, tuple[str, dict[str, Any]]] = {
    "import_id": (_ID_IN_PATH, _ID),
    "call_log_id": (_ID_IN_PATH, _ID),
    "upload_id": _UPLOAD_ID,
    "index": (
        "From 0; below the upload's expected_chunks (else 422). ASCII digits; past 2^31-1 the path is a 404.",
        {"type": "integer", "minimum": 0, "maximum": MAX_CHUNKS - 1},
    ),
    "job_id": (
        _JOB_ID,
        {"type": "string", "minLength": 1, "maxLength": 64, "not": {"enum": list(JobIdConverter.RESERVED)}},
    ),
}


#: Operations that need nothing but the code itself: no dependency can be down for them.
_SELF_CONTAINED = {"getOpenApi", "apiDocs"}


def build(app: Flask) -> dict[str, Any]:
    """The document of app's routes: spectree's, completed as this module says."""
    with app.app_context():
        generated = copy.deepcopy(spec.api.spec)
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": INFO,
        "servers": [{"url": "/"}],
        "security": generated["security"],
        "tags": [{"name": name, "description": text} for name, text in spec.TAGS.items()],
        "paths": {},
        "components": {
            "securitySchemes": generated["components"]["securitySchemes"],
            "responses": RESPONSES,
            "schemas": {
                name: _untitled(schema) for name, schema in generated["components"]["schemas"].items()
            },
            "headers": HEADERS,
        },
    }
    paths = copy.deepcopy(generated["paths"])
    for path, extra in EXTRA_OPERATIONS.items():
        paths.setdefault(path, {}).update(copy.deepcopy(extra))
    for path, item in sorted(paths.items()):
        document["paths"][path] = {method: _complete(operation) for method, operation in item.items()}
    return document


def _complete(operation: dict[str, Any]) -> dict[str, Any]:
    supplement = SUPPLEMENT.get(operation["operationId"], {})
    for key in ("description", "tags"):
        if not operation.get(key):
            operation.pop(key, None)
    operation["parameters"] = [_parameter(p) for p in operation.get("parameters", [])] + supplement.get(
        "parameters", []
    )
    if operation["operationId"] in TUS_OPERATIONS:
        operation["parameters"].append(TUS_RESUMABLE)
    if not operation["parameters"]:
        del operation["parameters"]
    if "requestBody" in supplement:
        operation["requestBody"] = {**operation.get("requestBody", {}), **supplement["requestBody"]}

    responses = operation["responses"]
    _drop_undeclared_422(responses)
    for status, extra in supplement.get("responses", {}).items():
        responses[status] = {**responses.get(status, {}), **extra}
    for status, answer in list(responses.items()):
        name = _SHARED.get(answer.get("description", ""))
        if name is not None and set(answer) <= {"description", "content"}:
            responses[status] = {"$ref": f"#/components/responses/{name}"}
        elif status == "503":
            answer.setdefault("headers", {}).update(RETRY_AFTER)
    if "requestBody" in operation:
        responses.setdefault("400", {"$ref": "#/components/responses/IncompleteBody"})
    for status, name in _AROUND.items():
        responses[status] = {"$ref": f"#/components/responses/{name}"}
    if operation["operationId"] not in _SELF_CONTAINED:
        responses.setdefault("503", {"$ref": "#/components/responses/DatabaseUnavailable"})
    operation["responses"] = dict(sorted(responses.items()))
    return operation


def _untitled(schema: Any) -> Any:
    """A schema without pydantic's titles (each is its field's or model's name: nothing to read). A
    property named `title` is a schema (a dict), never a string, so it stays."""
    if isinstance(schema, dict):
        return {
            key: _untitled(value)
            for key, value in schema.items()
            if not (key == "title" and isinstance(value, str))
        }
    if isinstance(schema, list):
        return [_untitled(value) for value in schema]
    return schema


def _drop_undeclared_422(responses: dict[str, Any]) -> None:
    """spectree documents a 422 on every operation; one the route did not declare is never answered."""
    answer = responses.get("422")
    if answer is not None and answer.get("description") == "Unprocessable Content":
        del responses["422"]


def _parameter(parameter: dict[str, Any]) -> dict[str, Any]:
    if parameter["in"] == "path":
        description, schema = PATH_PARAMETERS[parameter["name"]]
        return {**parameter, "description": description, "schema": schema}
    schema = dict(parameter["schema"])
    text = schema.pop("description", None) or parameter.get("description")
    completed = {**parameter, "schema": schema}
    if text:
        completed["description"] = text
    else:
        completed.pop("description", None)
    return completed
