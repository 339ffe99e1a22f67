"""CORS for /api/ per CORS_ORIGINS: a page of an allowed origin may call the API (tus included) and read
the headers it needs; any other origin gets no CORS header, so its browser keeps the answer from it."""

from __future__ import annotations

import pytest

from edcrm.config import ConfigError, cors_origins

from .conftest import BASE

ALLOWED = "https://app.example.com"


@pytest.fixture
def allowing(app):
    app.config["CORS_ORIGINS"] = cors_origins(f"{ALLOWED}, https://uppy.example.org:8443/")
    return app


def preflight(client, path: str, origin: str, method: str = "PATCH"):
    return client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization,tus-resumable,upload-offset,content-type",
        },
    )


@pytest.mark.parametrize(
    "path", [BASE, BASE + "0123456789abcdef0123456789abcdef", "/api/recordings/uploads", "/api/leads"]
)
def test_a_preflight_from_an_allowed_origin_is_answered_without_a_token(allowing, client, path):
    response = preflight(client, path, ALLOWED)
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "Origin" in response.headers["Vary"]
    methods = {m.strip() for m in response.headers["Access-Control-Allow-Methods"].split(",")}
    assert {"POST", "PATCH", "HEAD", "DELETE", "OPTIONS", "GET", "PUT"} <= methods
    allowed = {h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")}
    assert {
        "authorization",
        "content-type",
        "tus-resumable",
        "upload-length",
        "upload-metadata",
        "upload-offset",
        "upload-checksum",
        "upload-concat",
        "upload-defer-length",
        "x-http-method-override",
        "x-requested-with",
        "idempotency-key",
        "x-chunk-sha256",
    } <= allowed
    assert int(response.headers["Access-Control-Max-Age"]) > 0
    assert "Access-Control-Allow-Credentials" not in response.headers


def test_the_origin_is_matched_whatever_its_case_and_port(allowing, client):
    response = preflight(client, BASE, "https://uppy.example.org:8443")
    assert response.headers["Access-Control-Allow-Origin"] == "https://uppy.example.org:8443"
    assert "Access-Control-Allow-Origin" not in preflight(client, BASE, "https://uppy.example.org").headers


@pytest.mark.parametrize("origin", ["https://evil.example.com", "http://app.example.com", "null"])
def test_another_origin_gets_no_cors_header(allowing, client, tus, origin):
    response = preflight(client, BASE, origin)
    assert not [name for name, _ in response.headers if name.lower().startswith("access-control-")]
    answer = tus.client.options(BASE, headers={"Origin": origin})
    assert "Access-Control-Allow-Origin" not in answer.headers
    assert "Origin" in answer.headers["Vary"]


def test_answers_to_an_allowed_origin_expose_the_tus_headers(allowing, tus, call_log):
    response = tus.create(call_log.id, 10, headers={"Origin": ALLOWED})
    assert response.status_code == 201
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
    exposed = {h.strip().lower() for h in response.headers["Access-Control-Expose-Headers"].split(",")}
    assert {
        "location",
        "upload-offset",
        "upload-length",
        "upload-expires",
        "upload-metadata",
        "upload-concat",
        "upload-defer-length",
        "tus-resumable",
        "tus-version",
        "tus-extension",
        "tus-max-size",
        "tus-checksum-algorithm",
    } <= exposed
    # Refusals too: a page reads the 409's offset and the 401's challenge.
    url = response.headers["Location"]
    refused = tus.patch(url, 3, b"abc", headers={"Origin": ALLOWED})
    assert refused.status_code == 409
    assert refused.headers["Access-Control-Allow-Origin"] == ALLOWED


def test_unset_cors_origins_allows_no_origin(app, client):
    assert app.config["CORS_ORIGINS"] == ()
    response = preflight(client, BASE, ALLOWED)
    assert "Access-Control-Allow-Origin" not in response.headers
    assert response.headers["Tus-Version"] == "1.0.0"  # the route's own OPTIONS answered it


def test_a_star_allows_every_origin(app, client):
    app.config["CORS_ORIGINS"] = cors_origins("*")
    assert preflight(client, BASE, "https://anyone.example").headers["Access-Control-Allow-Origin"] == (
        "https://anyone.example"
    )


def test_pages_get_no_cors_headers(allowing, client):
    response = client.get("/login", headers={"Origin": ALLOWED})
    assert "Access-Control-Allow-Origin" not in response.headers


@pytest.mark.parametrize("raw", ["app.example.com", "ftp://x.example", "https://x.example/path"])
def test_a_cors_origin_that_is_no_origin_is_a_configuration_error(raw):
    with pytest.raises(ConfigError, match="CORS_ORIGINS"):
        cors_origins(raw)
