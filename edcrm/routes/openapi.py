"""GET /api/openapi.json, the OpenAPI document of the HTTP API, and GET /api/docs, the interactive docs
(Swagger UI) that render it. Both are public, like the API's own docs: they describe what every client
may call, and every call made from the docs page needs a bearer token like any other client's.

The document is generated once per process from the routes' declarations (edcrm.routes.api.document).
The docs page loads Swagger UI from edcrm/static/swagger-ui (vendored, no CDN); its own CSP adds only
the inline styles Swagger UI sets on the elements it draws.
"""

from __future__ import annotations

import json

from flask import Blueprint, Flask, current_app, render_template, request

from .api.document import build
from .api.schemas.meta import OpenApiDocument
from .api.spec import operation

bp = Blueprint("documentation", __name__)

#: The docs page's policy: the app's own, but for Swagger UI's inline styles.
DOCS_CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


def document(app: Flask) -> bytes:
    """The document as served (built at the first request of each app, then kept)."""
    served = app.extensions.get("edcrm.openapi")
    if served is None:
        served = app.extensions["edcrm.openapi"] = json.dumps(build(app), indent=1).encode()
    return served


@bp.get("/api/openapi.json")
@operation(
    "getOpenApi", "meta", public=True, HTTP_200=(OpenApiDocument, "The OpenAPI 3.1 document of this API.")
)
def openapi_json():
    """This document"""
    response = current_app.response_class(document(current_app), mimetype="application/json")
    response.add_etag()  # clients and tools may revalidate instead of fetching it again
    return response.make_conditional(request)


@bp.get("/api/docs")
@operation("apiDocs", "meta", public=True, HTTP_200=(None, "The interactive documentation (Swagger UI)."))
def api_docs():
    """The interactive documentation of this API"""
    response = current_app.make_response(render_template("api_docs.html"))
    response.headers["Content-Security-Policy"] = DOCS_CONTENT_SECURITY_POLICY
    return response
