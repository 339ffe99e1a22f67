"""POST /api/auth/token: a bearer token for an email and password (failures limited, see
edcrm.login_limit); DELETE: sign this token out."""

from __future__ import annotations

from flask import g

from ... import login_limit
from ...auth import api_auth
from ...extensions import db
from ...models import ApiToken
from ..errors import ApiError
from . import bp
from .inputs import Fields, json_object


@bp.post("/auth/token")
def issue_token():
    fields = Fields(json_object())
    email = fields.string("email", max_length=254)
    password = fields.string("password", max_length=1024)
    name = fields.string("name", max_length=80, required=False, default="api")  # e.g. the device
    fields.check()
    try:
        user = login_limit.authenticate(email, password)
    except login_limit.TooManySignIns as exc:
        response, status = ApiError(429, "too_many_requests", str(exc)).to_response()
        response.headers["Retry-After"] = str(exc.retry_after)
        return response, status
    if user is None:
        raise ApiError(401, "invalid_credentials", "Wrong email or password, or the account is deactivated.")
    token = ApiToken.issue(user, name=name)
    db.session.commit()
    return {"token": token, "user": user.to_dict()}


@bp.delete("/auth/token")
@api_auth()
def revoke_token():
    """Revoke the token of this request (a mobile app signing out)."""
    g.api_token.revoke()
    db.session.commit()
    return "", 204
