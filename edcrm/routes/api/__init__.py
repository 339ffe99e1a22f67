"""The JSON API under /api/: bearer tokens (see edcrm.auth.api_auth), no sessions, no CSRF."""

from __future__ import annotations

from flask import Blueprint

from ...extensions import csrf

bp = Blueprint("api", __name__, url_prefix="/api")

# A bearer token is sent on purpose by its holder, never by a browser on its own: no CSRF risk.
csrf.exempt(bp)


# Each module adds its routes to bp.
from . import auth, call_logs, imports, jobs, leads, playback, recordings, users  # noqa: E402, F401
