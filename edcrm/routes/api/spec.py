"""The API's operations as spectree declares them: `@operation(...)` on a route gives its request models
(validated before the view runs, with this API's error answers), its answers (checked against their
models) and what the OpenAPI document says of it.

spectree keeps the plain Flask app and blueprints; this module plugs the API's own rules into it: a JSON
body is read by edcrm.routes.api.inputs (415 for another type, 413 past 1 MiB, 422 for bad JSON), a
query string by its first values, and a validation error is the contract's 422 with every bad field.
Multipart forms are declared here but read by their route, which must bound the body first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import current_app, make_response
from spectree import SecurityScheme, SpecTree, Tag
from spectree.models import SecureType, SecuritySchemeData
from spectree.plugins.base import Context
from spectree.plugins.flask_plugin import FlaskPlugin
from spectree.plugins.werkzeug_utils import flask_response_unpack
from spectree.response import Response

from .inputs import json_object, optional_json_object, parse
from .schemas.base import Error

#: The shared error answers, by the description the document keeps once (components/responses).
UNAUTHORIZED = (Error, "No token, or an unknown or revoked one, or its user is deactivated (`unauthorized`).")
FORBIDDEN = (Error, "Not yours, or not your role (`forbidden`).")
NOT_FOUND = (Error, "No such record (`not_found`).")
TOO_LARGE = (Error, "The JSON body is over 1 MiB (`request_entity_too_large`).")
UNSUPPORTED_MEDIA_TYPE = (Error, "The body is not `application/json` (`unsupported_media_type`).")
VALIDATION_FAILED = (
    Error,
    "Invalid JSON or not an object (`invalid_json`), or invalid fields (`validation_failed`, with "
    "`fields`: {name: message}, every bad field at once).",
)

_DEPENDENCIES = {
    "database": "the database (`database_unavailable`)",
    "storage": "the file storage (`storage_unavailable`)",
    "queue": "the job queue (`queue_unavailable`)",
}


def unavailable(*dependencies: str, busy: bool = False) -> tuple[type[Error], str]:
    """The 503 of an operation that needs these dependencies (the database always), and, with busy, the
    threads that take uploads (see edcrm.gunicorn_worker)."""
    down = ", ".join(_DEPENDENCIES[name] for name in ("database", *dependencies))
    threads = "; or every thread that takes uploads stayed busy for `BODY_TIMEOUT_S` seconds (`server_busy`)"
    return Error, (
        f"A dependency cannot be reached: {down}{threads if busy else ''}. Nothing was changed or kept; "
        "try again after `Retry-After` seconds."
    )


#: What a route that takes a JSON body may also answer for its body alone.
JSON_BODY: dict[str, Any] = {
    "HTTP_413": TOO_LARGE,
    "HTTP_415": UNSUPPORTED_MEDIA_TYPE,
    "HTTP_422": VALIDATION_FAILED,
}

TAGS = {
    "auth": "Bearer tokens.",
    "imports": "CSV uploads that become round-robin-assigned leads (admins of the branch).",
    "leads": "Leads of the caller: a telecaller's assigned ones, an admin's branch's.",
    "call-logs": "Calls a telecaller made to their leads.",
    "meta": "Health, metrics and this document.",
    "recordings": "Call recordings: chunked and one-shot uploads, downloads.",
    "jobs": "The job ledger (admins): their branch's jobs and the system's.",
    "users": "The people of the admin's branch.",
}
_TAGS = {name: Tag(name=name, description=description) for name, description in TAGS.items()}

#: The API's only scheme; an operation anyone may call says `public=True`.
BEARER = SecurityScheme(
    name="bearer",
    data=SecuritySchemeData(
        type=SecureType.HTTP,
        scheme="bearer",
        description="A token from POST /api/auth/token or `flask --app app edcrm create-token EMAIL`.",
    ),
)


class ApiPlugin(FlaskPlugin):
    """spectree's Flask plugin with this API's reading of requests and its checks of answers."""

    def request_validation(self, request, query, json, form, headers, cookies):
        body = None
        if json is not None:
            body = parse(json, optional_json_object() if json.body_optional else json_object())
        arguments = parse(query, request.args.to_dict()) if query is not None else None
        request.context = Context(arguments, body, None, None, None)

    def validate_response(self, resp, resp_model, skip_validation, force_resp_serialize):
        """The view's answer as it is. Under tests and in debug, a JSON body is first checked against its
        status's model (an answer that is not what the document says is a bug: it raises); in
        production that check would cost a page of 50 jobs 1.4 ms for nothing the tests and
        tests/hostile/test_schema.py do not already check."""
        payload, status, _ = flask_response_unpack(resp)
        app = current_app
        if (app.testing or app.debug) and resp_model is not None and not self.is_app_response(payload):
            model = resp_model.find_model(status)
            if model is not None:
                model.model_validate(payload)
        return make_response(resp), None


api = SpecTree(
    backend=ApiPlugin,
    mode="strict",
    title="edcrm API",
    version="0.1.0",
    security_schemes=[BEARER],
    security={"bearer": []},
    naming_strategy=lambda model: model.__name__,
    nested_naming_strategy=lambda _parent, child: child,
    validation_error_model=Error,
)


def operation(
    operation_id: str,
    tag: str,
    *,
    public: bool = False,
    query: Any = None,
    json: Any = None,
    form: Any = None,
    **answers: Any,
) -> Callable:
    """Declare a route's operation: its id and tag, its request models and its answers by status
    (`HTTP_200=(Model, "description")`, or a shared answer such as NOT_FOUND). The view receives the
    validated `query` or `json` model when its signature names one."""
    return api.validate(
        operation_id=operation_id,
        tags=[_TAGS[tag]],
        security={} if public else None,
        query=query,
        json=json,
        form=form,
        resp=Response(**answers),
    )
