"""Playing a call's recording: the download with the token (GET …/recording/content), and a short-lived
URL that a media player (ExoPlayer, AVPlayer, `<audio>`) streams and seeks without it
(GET …/recording/url, then GET /api/recordings/play/TOKEN on the local storage). Every one of them
answers `Range` with 206.

On S3 the content route answers a 302 to a presigned URL. A client that follows it must drop its
Authorization header (S3 refuses a request that carries two authentications: the signature in the URL
and a Bearer header, "Only one auth mechanism allowed"; Python's urllib keeps the header, browsers and
OkHttp drop it on a redirect to another host); the URL route is the way for players.
"""

from __future__ import annotations

from typing import Any

from flask import g, url_for
from werkzeug.exceptions import NotFound

from ...auth import api_auth
from ...extensions import db
from ...models import Recording
from ...models.types import isoformat
from ...permissions import call_log_for
from ..errors import ApiError
from ..recording_download import (
    PlaybackRefused,
    download,
    playback_token,
    playback_url,
    recording_of_token,
    stream,
)
from . import bp
from .document import PATH_PARAMETERS
from .schemas.base import Error
from .schemas.playback import PlaybackUrl
from .spec import FORBIDDEN, NOT_FOUND, UNAUTHORIZED, operation, unavailable
from .supplement import BINARY, SUPPLEMENT

# What the document says of these operations beyond spectree (kept here, beside them: see the report of
# the mobile work; edcrm.routes.api.document and supplement are the tus work's).
PATH_PARAMETERS["token"] = (
    "The signed token of a playback URL (from GET …/recording/url); it expires with the URL.",
    {"type": "string", "minLength": 1, "maxLength": 1000},
)
_RANGE_PARAMETER = {
    "name": "Range",
    "in": "header",
    "required": False,
    "description": "One byte range (`bytes=START-END`, `bytes=START-`, `bytes=-LAST`): a 206 with those "
    "bytes. Several ranges, or an `If-Range` that no longer matches the ETag, answer the whole file.",
    "schema": {"type": "string", "example": "bytes=0-1023"},
}
_AUDIO = {"audio/*": {"schema": BINARY}}
_PARTIAL = {
    "content": _AUDIO,
    "headers": {
        "Content-Range": {"schema": {"type": "string"}, "example": "bytes 0-1023/48213"},
        "Accept-Ranges": {"schema": {"type": "string", "const": "bytes"}},
    },
}
_WHOLE = {"content": _AUDIO, "headers": {"Accept-Ranges": {"schema": {"type": "string", "const": "bytes"}}}}
_UNSATISFIABLE = {"headers": {"Content-Range": {"schema": {"type": "string"}, "example": "bytes */48213"}}}
SUPPLEMENT["downloadRecording"] = {
    **SUPPLEMENT.get("downloadRecording", {}),
    "parameters": [_RANGE_PARAMETER],
    "responses": {
        **SUPPLEMENT.get("downloadRecording", {}).get("responses", {}),
        "200": _WHOLE,
        "206": _PARTIAL,
        "416": _UNSATISFIABLE,
    },
}
SUPPLEMENT["playRecording"] = {
    "parameters": [_RANGE_PARAMETER],
    "responses": {"200": _WHOLE, "206": _PARTIAL, "416": _UNSATISFIABLE},
}

_RANGE = (
    Error,
    "The `Range` is not within the recording (`range_not_satisfiable`), with `Content-Range: bytes */SIZE`.",
)
_WHO: dict[str, Any] = {"HTTP_401": UNAUTHORIZED, "HTTP_403": FORBIDDEN, "HTTP_404": NOT_FOUND}


def _recording_of(call_log_id: int) -> Recording:
    """The call log's recording, for the telecaller who logged the call or an admin of its branch."""
    recording = call_log_for(g.user, call_log_id).recording
    if recording is None:
        raise NotFound(f"Call log {call_log_id} has no recording.")
    return recording


@bp.get("/call-logs/<int:call_log_id>/recording/content")
@api_auth()
@operation(
    "downloadRecording",
    "recordings",
    HTTP_200=(None, "The audio, streamed (`Accept-Ranges: bytes`)."),
    HTTP_206=(None, "The bytes of the `Range` asked for, with `Content-Range`."),
    HTTP_302=(
        None,
        "A short-lived signed URL of the storage (S3), in Location. Follow it without the "
        "Authorization header (S3 refuses a request with two authentications); media players should "
        "use GET …/recording/url instead.",
    ),
    HTTP_416=_RANGE,
    **_WHO,
    HTTP_503=unavailable("storage"),
)
def recording_content(call_log_id: int):
    """The call's recording (the telecaller who logged it, or the branch's admin)"""
    return download(_recording_of(call_log_id))


@bp.get("/call-logs/<int:call_log_id>/recording/url")
@api_auth()
@operation(
    "getRecordingUrl",
    "recordings",
    HTTP_200=(PlaybackUrl, "A URL that plays the recording without the token until `expires_at`."),
    **_WHO,
)
def recording_url(call_log_id: int):
    """A short-lived URL a media player streams and seeks (Range) without the token"""
    recording = _recording_of(call_log_id)
    app_url = url_for(".play_recording", token=playback_token(recording), _external=True)
    url, expires_at = playback_url(recording, app_url)
    return {"url": url, "expires_at": isoformat(expires_at)}


@bp.get("/recordings/play/<token>")
@operation(
    "playRecording",
    "recordings",
    public=True,
    HTTP_200=(None, "The audio, streamed (`Accept-Ranges: bytes`)."),
    HTTP_206=(None, "The bytes of the `Range` asked for, with `Content-Range`."),
    HTTP_403=(Error, "Not a playback URL of this server, or altered (`forbidden`)."),
    HTTP_404=(Error, "The recording is gone (`not_found`)."),
    HTTP_410=(Error, "The URL has expired (`url_expired`): ask GET …/recording/url for a new one."),
    HTTP_416=_RANGE,
    HTTP_503=unavailable("storage"),
)
def play_recording(token: str):
    """A recording, for the holder of a playback URL of GET …/recording/url (no token: the URL is it)"""
    try:
        recording_id, sha256 = recording_of_token(token)
    except PlaybackRefused as refused:
        if refused.expired:
            raise ApiError(410, "url_expired", str(refused)) from None
        raise ApiError(403, "forbidden", str(refused)) from None
    recording = db.session.get(Recording, recording_id)
    if recording is None or recording.sha256 != sha256:
        raise NotFound("This recording is gone.")
    return stream(recording, inline=True)
