"""GET /api/docs, the interactive API docs: public like the document they render, served from this site
only (Swagger UI is vendored under edcrm/static), under a CSP that differs from the app's only by the
inline styles Swagger UI draws with. And the document is the one generated from the routes' schemas."""

from __future__ import annotations

import re
from importlib import resources

from edcrm.routes.api.document import build
from edcrm.routes.api.schemas.auth import TokenRequest


def directives(response) -> dict[str, list[str]]:
    policy = response.headers["Content-Security-Policy"]
    return {part.split()[0]: part.split()[1:] for part in policy.split("; ")}


def test_the_docs_are_public_and_load_nothing_from_elsewhere(client):
    response = client.get("/api/docs")  # no token, no session

    assert response.status_code == 200
    assert response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert "//" not in page.replace("<!doctype html>", "")  # no URL of another site, no CDN
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert assets and all(asset.startswith("/static/") for asset in assets)
    for asset in assets:
        served = client.get(asset)
        assert served.status_code == 200, asset
        served.close()
    assert 'data-spec-url="/api/openapi.json"' in page


def test_only_the_docs_page_allows_inline_styles(client):
    docs = directives(client.get("/api/docs"))
    assert docs["style-src"] == ["'self'", "'unsafe-inline'"]  # Swagger UI styles the elements it draws
    assert docs["script-src"] == ["'self'"]
    assert docs["default-src"] == ["'self'"]
    assert docs["frame-ancestors"] == ["'none'"]
    assert directives(client.get("/api/openapi.json"))["style-src"] == ["'self'"]
    assert directives(client.get("/login"))["style-src"] == ["'self'"]


def test_the_served_document_is_generated_from_the_declarations(app, client):
    served = client.get("/api/openapi.json").get_json()

    assert served == build(app)
    assert not resources.files("edcrm").joinpath("openapi.json").is_file()  # no hand-kept copy
    documented = served["components"]["schemas"]["TokenRequest"]["properties"]["email"]
    declared = TokenRequest.model_json_schema()["properties"]["email"]
    assert documented == {key: value for key, value in declared.items() if key != "title"}
    assert documented["maxLength"] == 254


def test_what_the_document_bounds_the_api_refuses(client):
    too_long = "a" * 255 + "@example.test"

    response = client.post("/api/auth/token", json={"email": too_long, "password": ""})

    assert response.status_code == 422
    assert response.get_json()["error"]["fields"] == {
        "email": "must be at most 254 characters",
        "password": "is required",
    }
