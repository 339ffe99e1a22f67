"""GET /api/openapi.json: the OpenAPI document of the HTTP API, public like the API's own docs."""

from __future__ import annotations

import functools
from importlib import resources

from flask import Blueprint, current_app, request

bp = Blueprint("openapi", __name__)


@functools.cache
def document() -> bytes:
    """edcrm/openapi.json, packaged with the code (read once per process)."""
    return resources.files("edcrm").joinpath("openapi.json").read_bytes()


@bp.get("/api/openapi.json")
def openapi_json():
    response = current_app.response_class(document(), mimetype="application/json")
    response.add_etag()  # clients and tools may revalidate instead of fetching it again
    return response.make_conditional(request)
