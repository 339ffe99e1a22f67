"""The JSON API under /api/: bearer tokens (see edcrm.permissions.api_auth), no sessions, no CSRF."""

from __future__ import annotations

from flask import Blueprint, Response, g

from ...extensions import csrf

bp = Blueprint("api", __name__, url_prefix="/api")

# A bearer token is sent on purpose by its holder, never by a browser on its own: no CSRF risk.
csrf.exempt(bp)


@bp.after_request
def _bearer_challenge(response: Response) -> Response:
    """RFC 6750: a 401 from a bearer-protected route names the scheme it wants."""
    if response.status_code == 401 and g.get("bearer_challenge"):
        response.headers["WWW-Authenticate"] = 'Bearer realm="edcrm"'
    return response


from . import auth, call_logs, imports, jobs, leads, recordings  # noqa: E402, F401  (each module adds its routes to bp)
