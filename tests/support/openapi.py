"""Checking answers against the schemas of the OpenAPI document."""

from __future__ import annotations

from jsonschema import Draft202012Validator


def check(document, schema_name: str, instance) -> None:
    """Validate instance against a schema of the document (its $refs resolved in the document)."""
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": document["components"]}
    Draft202012Validator(schema).validate(instance)
