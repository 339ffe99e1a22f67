"""The OpenAPI document: valid OpenAPI 3.1, served without auth, and in step with the app's routes."""

from __future__ import annotations

import re

import pytest
from jsonschema import Draft202012Validator, ValidationError
from openapi_spec_validator import validate

from edcrm.extensions import db
from edcrm.models import Lead

HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


@pytest.fixture
def document(app):
    response = app.test_client().get("/api/openapi.json")  # no Authorization header
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    return response.get_json()


def documented(document) -> dict[str, set[str]]:
    return {
        path: {method.upper() for method in item if method in HTTP_METHODS}
        for path, item in document["paths"].items()
    }


def routed(app) -> dict[str, set[str]]:
    """The app's /api/, /healthz and /metrics routes as OpenAPI paths ({name} parameters) and methods."""
    routes: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        if not (rule.rule.startswith("/api/") or rule.rule in ("/healthz", "/metrics")):
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        routes.setdefault(path, set()).update(rule.methods - {"HEAD", "OPTIONS"})
    return routes


def test_the_document_is_valid_openapi_3_1(document):
    validate(document)
    assert document["openapi"].startswith("3.1.")


def test_every_route_is_documented_and_every_documented_route_exists(app, document):
    assert documented(document) == routed(app)


def test_path_parameters_match_the_routes(document):
    for path, item in document["paths"].items():
        names = set(re.findall(r"{([^}]+)}", path))
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == names, f"{method.upper()} {path}"


def test_security(document):
    bearer = document["components"]["securitySchemes"]["bearer"]
    assert (bearer["type"], bearer["scheme"]) == ("http", "bearer")
    assert document["security"] == [{"bearer": []}]
    public = {
        (path, method)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if operation.get("security") == []
    }
    assert public == {("/api/auth/token", "post"), ("/api/openapi.json", "get"), ("/healthz", "get")}


def test_every_error_answer_has_the_error_shape(document):
    error_ref = "#/components/schemas/Error"
    responses = document["components"]["responses"]
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for status, answer in operation["responses"].items():
                if not status.startswith("4"):
                    continue
                if "$ref" in answer:
                    answer = responses[answer["$ref"].rsplit("/", 1)[-1]]
                schema = answer["content"]["application/json"]["schema"]
                assert schema == {"$ref": error_ref}, f"{method.upper()} {path} {status}"


def check(document, schema_name: str, instance) -> None:
    """Validate instance against a schema of the document (its $refs resolved in the document)."""
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": document["components"]}
    Draft202012Validator(schema).validate(instance)


def test_the_documented_shapes_are_what_the_api_answers(app, document, branch, telecaller):
    client = app.test_client()
    lead = Lead(
        branch_id=branch.id, telecaller_id=telecaller.id, student_name="Asha", phone_number="+919800000001"
    )
    db.session.add(lead)
    db.session.commit()

    token = client.post("/api/auth/token", json={"email": telecaller.email, "password": "secret-password"})
    check(document, "TokenResponse", token.get_json())
    headers = {"Authorization": f"Bearer {token.get_json()['token']}"}

    check(document, "LeadPage", client.get("/api/leads?limit=1", headers=headers).get_json())
    body = {"lead_id": lead.id, "outcome": "connected", "duration_seconds": 42}
    check(document, "CallLogRequest", body)
    created = client.post("/api/call-logs", json=body, headers=headers)
    assert created.status_code == 201
    check(document, "CallLog", created.get_json())
    fetched = client.get(f"/api/call-logs/{created.get_json()['id']}", headers=headers)
    check(document, "CallLog", fetched.get_json())
    check(document, "Health", client.get("/healthz").get_json())

    for answer in (
        client.get("/api/leads"),  # 401
        client.get("/api/call-logs/999", headers=headers),  # 404
        client.post("/api/call-logs", json={"outcome": "maybe"}, headers=headers),  # 422 with fields
    ):
        assert 400 <= answer.status_code < 500
        check(document, "Error", answer.get_json())

    with pytest.raises(ValidationError):  # the schemas do reject what the contract rules out
        check(document, "CallLog", {**fetched.get_json(), "outcome": "maybe"})


def test_revalidation(app):
    client = app.test_client()
    etag = client.get("/api/openapi.json").headers["ETag"]
    assert client.get("/api/openapi.json", headers={"If-None-Match": etag}).status_code == 304
