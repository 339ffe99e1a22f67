"""GET /recordings/ID: a recording's audio on the session cookie (the jobs pages link to it); the mobile
app's twin is GET /api/call-logs/ID/recording/content."""

from __future__ import annotations

from flask import g

from ...auth import page_auth
from ...permissions import recording_for
from ..recording_download import download
from . import bp


@bp.get("/recordings/<int:recording_id>")
@page_auth()
def recording_file(recording_id: int):
    return download(recording_for(g.user, recording_id))
