"""What the API and the pages share about serving a recording: a short-lived signed URL of the storage
where it makes them (S3), else the bytes streamed from storage, answering `Range` (206) so that a media
player seeks without fetching the whole file, and never holding the file in memory.

A playback URL is the storage's presigned URL (S3) or, on the local storage, an app URL carrying a token
signed with SECRET_KEY (edcrm.routes.api.playback serves it): either plays without the user's token, for
PLAYBACK_URL_SECONDS.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import PurePosixPath
from typing import BinaryIO

from flask import Response, current_app, jsonify, redirect, request
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from werkzeug.http import is_resource_modified, parse_range_header
from werkzeug.wrappers import Response as BaseResponse

from ..models import Recording
from ..models.types import utcnow
from ..storage import BLOCK_SIZE, get_storage

#: How long a signed download URL (the 302 of a download) stays valid.
DOWNLOAD_URL_SECONDS = 300

#: How long a playback URL stays valid: long enough for a player to seek through a long call (it asks
#: for ranges as it plays), short enough that a copied URL soon stops working.
PLAYBACK_URL_SECONDS = 15 * 60

#: Keeps playback tokens apart from anything else signed with SECRET_KEY.
_SALT = "edcrm.recording-playback"

#: File name extensions of the types audio detection gives (a multipart-built recording's key has none).
_EXTENSIONS = {
    "audio/mp4": ".m4a",
    "audio/aac": ".aac",
    "audio/3gpp": ".3gp",
    "audio/amr": ".amr",
    "audio/ogg": ".ogg",
    "audio/opus": ".opus",
    "audio/wav": ".wav",
    "audio/x-wav": ".wav",
    "audio/mpeg": ".mp3",
    "audio/webm": ".webm",
}


def download_name(recording: Recording) -> str:
    """The file name a download is saved under: the key's extension, else the type's."""
    suffix = PurePosixPath(recording.storage_key).suffix
    if not suffix:
        content_type = recording.content_type.split(";")[0].strip().lower()
        suffix = _EXTENSIONS.get(content_type) or mimetypes.guess_extension(content_type) or ""
    return f"call-{recording.call_log_id}-recording{suffix}"


def download(recording: Recording) -> BaseResponse:
    """A 302 to a short-lived signed URL where the storage makes them, else the bytes (with Range)."""
    url = get_storage().url_for_download(
        recording.storage_key,
        DOWNLOAD_URL_SECONDS,
        filename=download_name(recording),
        content_type=recording.content_type,
    )
    if url is not None:
        return redirect(url, 302)
    return stream(recording, inline=False)


def _blocks(file: BinaryIO, start: int, length: int) -> Iterator[bytes]:
    """length bytes of file from start, BLOCK_SIZE at a time; the file is closed when they are sent,
    and when the client goes away first (the server closes the iterator, or it is collected)."""
    with file:
        if start:
            file.seek(start)  # a seek, not a read of everything before the range
        remaining = length
        while remaining > 0:
            block = file.read(min(BLOCK_SIZE, remaining))
            if not block:
                return
            remaining -= len(block)
            yield block


def _wanted_range(recording: Recording) -> tuple[int, int] | bool | None:
    """The (start, stop) a request's Range asks for; None for the whole file (no Range, one that does
    not parse or asks for several ranges: RFC 9110 lets a server answer those whole, or an If-Range
    that no longer matches); False when it cannot be satisfied (past the end)."""
    header = request.headers.get("Range")
    if header is None:
        return None
    if "If-Range" in request.headers and is_resource_modified(
        request.environ,
        etag=f'"{recording.sha256}"',
        last_modified=recording.created_at,
        ignore_if_range=False,
    ):
        return None
    ranges = parse_range_header(header)
    if ranges is None or len(ranges.ranges) != 1:
        return None
    return ranges.range_for_length(recording.size) or False


def stream(recording: Recording, *, inline: bool) -> BaseResponse:
    """The recording's bytes from storage, the whole file (200) or the range asked for (206, 416),
    read from storage as they are sent."""
    size = recording.size
    wanted = _wanted_range(recording)
    if wanted is False:
        return range_not_satisfiable(size)
    start, stop = wanted if isinstance(wanted, tuple) else (0, size)
    file = get_storage().open(recording.storage_key)  # also for HEAD: a missing file is not a 200
    if request.method == "HEAD":
        file.close()
        response = Response(b"", mimetype=recording.content_type)
    else:
        response = Response(_blocks(file, start, stop - start), mimetype=recording.content_type)
    response.headers["Accept-Ranges"] = "bytes"
    response.content_length = stop - start
    disposition = "inline" if inline else "attachment"
    response.headers["Content-Disposition"] = f'{disposition}; filename="{download_name(recording)}"'
    response.headers["Cache-Control"] = "private, no-store"
    # The content's own hash: If-Range and If-None-Match work, and other bytes never match.
    response.set_etag(recording.sha256)
    response.last_modified = recording.created_at
    if isinstance(wanted, tuple):
        response.status_code = 206
        response.headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
        return response
    return response.make_conditional(request.environ)  # 304 for If-None-Match with the same ETag


def range_not_satisfiable(size: int) -> BaseResponse:
    """416 with the length the ranges must fall within (RFC 9110, 15.5.17)."""
    message = f"The Range asked for is not within the recording's {size} bytes."
    response = jsonify({"error": {"code": "range_not_satisfiable", "message": message}})
    response.status_code = 416
    response.headers["Content-Range"] = f"bytes */{size}"
    response.headers["Accept-Ranges"] = "bytes"
    return response


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=_SALT)


def playback_token(recording: Recording) -> str:
    """A token that opens this recording for PLAYBACK_URL_SECONDS."""
    return _serializer().dumps({"recording_id": recording.id, "sha256": recording.sha256})


class PlaybackRefused(Exception):
    """A playback token that is not one of ours (forged, altered) or that has expired."""

    def __init__(self, message: str, *, expired: bool):
        super().__init__(message)
        self.expired = expired


def recording_of_token(token: str) -> tuple[int, str]:
    """The recording id and SHA-256 a playback token opens; PlaybackRefused if it opens none."""
    try:
        payload = _serializer().loads(token, max_age=PLAYBACK_URL_SECONDS)
    except SignatureExpired:
        raise PlaybackRefused("This playback URL has expired; ask for a new one.", expired=True) from None
    except BadSignature:
        raise PlaybackRefused("This is not a playback URL of this server.", expired=False) from None
    if not isinstance(payload, dict) or not isinstance(payload.get("recording_id"), int):
        raise PlaybackRefused("This is not a playback URL of this server.", expired=False)
    return payload["recording_id"], str(payload.get("sha256"))


def playback_url(recording: Recording, app_url: str) -> tuple[str, datetime]:
    """Where a media player plays the recording without a token, and until when: the storage's
    presigned URL (S3) or app_url (the app's signed URL), for PLAYBACK_URL_SECONDS."""
    expires_at = utcnow() + timedelta(seconds=PLAYBACK_URL_SECONDS)
    url = get_storage().url_for_download(
        recording.storage_key,
        PLAYBACK_URL_SECONDS,
        filename=download_name(recording),
        content_type=recording.content_type,
    )
    return url or app_url, expires_at
