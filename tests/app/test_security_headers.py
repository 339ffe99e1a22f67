"""Every response carries the security headers (CSP, no framing, nosniff, a referrer policy), and the
templates hold nothing the strict Content-Security-Policy would refuse (inline scripts, style attributes,
event handler attributes)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edcrm.models import Role
from tests.support.people import bearer, make_user

TEMPLATES = Path(__file__).resolve().parents[2] / "edcrm" / "templates"


def assert_secured(response) -> None:
    policy = response.headers["Content-Security-Policy"]
    directives = {part.split()[0]: part.split()[1:] for part in policy.split("; ")}
    assert directives["default-src"] == ["'self'"]
    assert directives["script-src"] == ["'self'"]  # no 'unsafe-inline', no 'unsafe-eval'
    assert directives["style-src"] == ["'self'"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"


@pytest.mark.parametrize("path", ["/login", "/", "/no-such-page", "/static/style.css", "/healthz"])
def test_pages_and_files_carry_the_headers(client, path):
    response = client.get(path)
    assert_secured(response)
    response.close()


def test_the_api_its_errors_and_a_signed_in_page_carry_the_headers(client, branch):
    admin = make_user(branch, Role.ADMIN, email="admin@kochi.test")
    assert_secured(client.get("/api/leads", headers=bearer(admin)))
    assert_secured(client.get("/api/leads"))  # 401
    assert_secured(client.post("/api/auth/token", json={"email": "a@b.test", "password": "x"}))
    client.post("/login", data={"email": "admin@kochi.test", "password": "secret-password"})
    assert_secured(client.get("/jobs"))  # the page with the Retry and Cancel buttons


@pytest.mark.parametrize("template", sorted(TEMPLATES.rglob("*.html")), ids=lambda p: p.name)
def test_no_template_holds_what_the_policy_refuses(template):
    html = template.read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "an inline script"
    assert not re.search(r"\sstyle=", html), "a style attribute"
    assert not re.search(r"<style", html), "a style element"
    assert not re.search(r"\son[a-z]+=", html), "an event handler attribute"
    assert "javascript:" not in html
