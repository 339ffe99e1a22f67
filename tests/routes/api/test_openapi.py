"""The OpenAPI document: valid OpenAPI 3.1, served without auth, and in step with the app's routes."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import ValidationError
from openapi_spec_validator import validate

from edcrm.extensions import db
from edcrm.models import Lead
from tests.support.openapi import check

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
        # HEAD is Flask's for a GET; a route of its own (tus's) is documented.
        methods = rule.methods - {"OPTIONS"} - ({"HEAD"} if "GET" in rule.methods else set())
        routes.setdefault(path, set()).update(methods)
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
    documentation = {("/api/openapi.json", "get"), ("/api/docs", "get")}  # public, like the API's docs
    assert public == {("/api/auth/token", "post"), ("/healthz", "get"), *documentation}


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


# -- the contract's failures, on every operation (see "Failures and bad input") ------------------------


def operations(document):
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield path, method, operation


def answer(document, response: dict) -> dict:
    """A response object, its $ref resolved."""
    if "$ref" in response:
        return document["components"]["responses"][response["$ref"].rsplit("/", 1)[-1]]
    return response


def test_every_operation_documents_timeouts_and_oversized_requests(document):
    for path, method, operation in operations(document):
        assert {"408", "414", "431"} <= set(operation["responses"]), f"{method.upper()} {path}"


def test_every_operation_with_a_body_documents_an_incomplete_one(document):
    for path, method, operation in operations(document):
        if "requestBody" in operation:
            description = answer(document, operation["responses"]["400"])["description"]
            assert "incomplete_body" in description, f"{method.upper()} {path}"


def test_every_operation_on_a_dependency_documents_its_503_with_retry_after(document):
    for path, method, operation in operations(document):
        if path in ("/api/openapi.json", "/api/docs"):  # made from the code alone: they need nothing
            assert "503" not in operation["responses"]
            continue
        unavailable = answer(document, operation["responses"]["503"])
        headers = unavailable["headers"]
        retry_after = headers["Retry-After"]
        if "$ref" in retry_after:
            retry_after = document["components"]["headers"][retry_after["$ref"].rsplit("/", 1)[-1]]
        assert retry_after["required"] is True, f"{method.upper()} {path}"
        if path != "/healthz":
            assert "_unavailable`" in unavailable["description"], f"{method.upper()} {path}"


@pytest.mark.parametrize(
    ("path", "method", "code", "status"),
    [
        ("/api/recordings/uploads/{upload_id}/chunks/{index}", "put", "unsupported_media_type", "415"),
        ("/api/recordings/uploads/{upload_id}/chunks/{index}", "put", "MAX_RECORDING_BYTES", "413"),
        ("/api/recordings/uploads/{upload_id}/chunks/{index}", "put", "upload_state_conflict", "409"),
        ("/api/call-logs/{call_log_id}/recording", "post", "unsupported_media_type", "415"),
        ("/api/imports", "post", "unsupported_media_type", "415"),
        ("/api/imports", "post", "storage_unavailable", "503"),
        ("/api/recordings/uploads/{upload_id}/chunks/{index}", "put", "storage_unavailable", "503"),
        ("/api/auth/token", "post", "too_many_requests", "429"),
    ],
)
def test_the_contracts_answers_are_documented(document, path, method, code, status):
    response = answer(document, document["paths"][path][method]["responses"][status])
    assert code in response["description"]
    if status == "429":
        assert "Retry-After" in response["headers"]


def test_every_integer_parameter_is_within_the_columns(document):
    for path, method, operation in operations(document):
        for parameter in operation.get("parameters", []):
            schema = parameter["schema"]
            if schema.get("type") == "integer":
                assert schema["maximum"] <= 2**31 - 1, f"{method.upper()} {path} {parameter['name']}"


def test_the_documented_cursor_forms_are_the_servers(document):
    from edcrm.routes.api.pagination import ID_CURSOR, JOB_CURSOR

    schemas = document["components"]["schemas"]
    assert schemas["LeadCursor"]["pattern"] == f"^{ID_CURSOR.pattern}$"
    assert schemas["JobCursor"]["pattern"] == f"^{JOB_CURSOR.pattern}$"


def telecaller_ids_pattern() -> str:
    """The pattern of a telecaller_ids value of POST /api/imports, from the schema the document is
    generated from (read here, not through the app: hypothesis runs a test many times, and a
    function-scoped fixture only once)."""
    from edcrm.routes.api.schemas.imports import ImportUpload

    ids = ImportUpload.model_json_schema()["properties"]["telecaller_ids"]
    return ids["items"]["pattern"]


@pytest.fixture(scope="module")
def document_pattern():
    return telecaller_ids_pattern()


@given(st.integers(-(10**12), 10**12))
def test_the_documented_telecaller_ids_are_the_ids_the_server_takes(document_pattern, number):
    from edcrm.routes.import_uploads import parse_telecaller_ids

    text = str(number)
    documented = re.fullmatch(document_pattern, text) is not None
    try:
        parse_telecaller_ids([text])
    except ValueError:
        taken = False
    else:
        taken = True
    assert documented == taken == (0 < number <= 2**31 - 1)


# Fifty lists drawn from the pattern: drawing from a regular expression this large is slow.
@settings(max_examples=50)
@given(st.data())
def test_every_documented_telecaller_id_list_is_taken(document_pattern, data):
    from edcrm.routes.import_uploads import parse_telecaller_ids

    text = data.draw(st.from_regex(document_pattern, fullmatch=True))
    assert parse_telecaller_ids([text])
