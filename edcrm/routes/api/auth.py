"""POST /api/auth/token: a bearer token for an email and password (failures limited, see
edcrm.login_limit); DELETE: sign this token out."""

from __future__ import annotations

from typing import cast

from flask import g

from ... import login_limit
from ...auth import api_auth
from ...extensions import db
from ...models import ApiToken
from ..errors import ApiError
from . import bp
from .schemas.auth import TokenRequest, TokenResponse
from .schemas.base import Error
from .serializers import user_json
from .spec import JSON_BODY, UNAUTHORIZED, operation


@bp.post("/auth/token")
@operation(
    "issueToken",
    "auth",
    public=True,
    HTTP_200=(TokenResponse, "A new token (shown once) and its user."),
    HTTP_401=(Error, "Wrong email or password, or the account is deactivated (`invalid_credentials`)."),
    HTTP_429=(
        Error,
        "Too many failed sign-ins for this email or from this address (`LOGIN_RATE_LIMIT`, "
        "`too_many_requests`): try again after `Retry-After` seconds.",
    ),
    **JSON_BODY,
)
def issue_token(json: TokenRequest):
    """A bearer token for an email and password"""
    try:
        user = login_limit.authenticate(json.email, json.password)
    except login_limit.TooManySignIns as exc:
        response, status = ApiError(429, "too_many_requests", str(exc)).to_response()
        response.headers["Retry-After"] = str(exc.retry_after)
        return response, status
    if user is None:
        raise ApiError(401, "invalid_credentials", "Wrong email or password, or the account is deactivated.")
    token = ApiToken.issue(user, name=cast(str, json.name))  # null is absent: the model's default
    db.session.commit()
    return {"token": token, "user": user_json(user)}


@bp.delete("/auth/token")
@api_auth()
@operation(
    "revokeToken", "auth", HTTP_204=(None, "Revoked: the token no longer works."), HTTP_401=UNAUTHORIZED
)
def revoke_token():
    """Revoke the token of this request (sign out)"""
    g.api_token.revoke()
    db.session.commit()
    return "", 204
