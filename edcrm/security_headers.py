"""Security headers on every response, pages and API alike.

- `Content-Security-Policy`: scripts, styles, images, fonts and fetches from this site only, no inline
  script or style attribute (the templates have none: edcrm/static holds the scripts), no plugins, forms
  post here only, and no page may be framed (`frame-ancestors 'none'`, so the jobs page's Retry and Cancel
  buttons cannot be overlaid by another site);
- `X-Frame-Options: DENY`, the same for browsers that predate frame-ancestors;
- `X-Content-Type-Options: nosniff`: an upload served back is never run as a script or a page;
- `Referrer-Policy: same-origin`: links to other sites do not learn the paths (ids) of this one.

A small after_request rather than Flask-Talisman: these four fixed headers are all it would add here,
and its defaults (an HTTPS redirect, HSTS, secure cookies) belong to the proxy that terminates TLS, not
to the embedded mode served over plain HTTP. A response that sets one of them itself keeps its own.
"""

from __future__ import annotations

from flask import Flask, Response

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def add_security_headers(response: Response) -> Response:
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def init_app(app: Flask) -> None:
    app.after_request(add_security_headers)
