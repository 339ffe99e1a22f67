"""tus 1.0.0 at /api/recordings/tus/: recordings uploaded by any tus client (TUSKit, tus-android-client,
tus-js-client, Uppy, tuspy).

This module speaks the protocol: it reads and checks every tus header, authenticates (a telecaller's
bearer token; OPTIONS needs none), checks ownership, and writes every tus header of the answers. What
happens to the bytes is edcrm.recordings.tus's, which knows nothing of HTTP; its refusals are answered
by edcrm.routes.errors with the statuses tus gives them (409 offset, 423 locked, 460 checksum, 410
expired). Answers are the API's JSON errors, except HEAD's, which have no body.

- core: HEAD (offset, length, `Cache-Control: no-store`), PATCH (`application/offset+octet-stream`, else
  415; `Upload-Offset` where the upload is, else 409 with the upload's offset), OPTIONS, `Tus-Resumable`
  on every answer and 412 for a request without `Tus-Resumable: 1.0.0`, `X-HTTP-Method-Override`;
- creation (POST, `Upload-Metadata` with `call_log_id`), creation-with-upload (a POST with the first
  bytes), creation-defer-length (`Upload-Defer-Length: 1`, the length in a later PATCH), termination
  (DELETE), checksum (`Upload-Checksum` of each PATCH: sha1, md5, sha256, crc32), expiration
  (`Upload-Expires`) and concatenation (`Upload-Concat: partial`, then `final;URL URL...`).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, g, request, url_for
from werkzeug.exceptions import (
    ClientDisconnected,
    Forbidden,
    MethodNotAllowed,
    NotFound,
    RequestEntityTooLarge,
)
from werkzeug.http import http_date

from ..auth import api_auth
from ..extensions import csrf
from ..models import RecordingUpload, Role, UploadKind
from ..models.recording import ConcatRole
from ..permissions import call_log_for, upload_for
from ..recordings import tus
from .api.schemas.base import Error
from .api.spec import UNAUTHORIZED, operation, unavailable
from .bodies import IncompleteBody
from .errors import ApiError

PREFIX = "/api/recordings/tus"
bp = Blueprint("tus", __name__, url_prefix=PREFIX)

# Bearer tokens only, sent on purpose by their holder: no CSRF risk, as for the rest of /api/.
csrf.exempt(bp)

VERSION = "1.0.0"
EXTENSIONS = (
    "creation",
    "creation-with-upload",
    "creation-defer-length",
    "termination",
    "checksum",
    "expiration",
    "concatenation",
)
#: The body of a PATCH (and of a creation with upload): the bytes from Upload-Offset on.
OFFSET_OCTET_STREAM = "application/offset+octet-stream"
#: The methods a POST may stand for with X-HTTP-Method-Override (clients whose HTTP stack lacks them).
OVERRIDABLE = ("PATCH", "DELETE", "HEAD")
#: What tus names its own status: the checksum extension's.
STATUS_TEXT = {460: "460 Checksum Mismatch"}

_DIGITS = re.compile(r"[0-9]{1,19}")
#: A metadata key: no spaces, no commas, not empty (tus 1.0); printable ASCII.
_KEY = re.compile(r"[!-+\--~]+")


def _bad(message: str, code: str = "invalid_header") -> ApiError:
    return ApiError(400, code, message)


# -- parsing the tus headers -------------------------------------------------------------------------------


def parse_size(name: str, value: str | None) -> int | None:
    """A header that is a number of bytes (Upload-Length, Upload-Offset): None when absent."""
    if value is None:
        return None
    value = value.strip()
    if not _DIGITS.fullmatch(value):
        raise _bad(f"{name} must be a number of bytes, not {value[:40]!r}.")
    return int(value)


def parse_metadata(value: str | None) -> dict[str, str | None]:
    """Upload-Metadata: comma-separated `key base64value` pairs (the value may be left out); keys unique."""
    metadata: dict[str, str | None] = {}
    if not value:
        return metadata
    for item in value.split(","):
        words = item.split()
        if not words:
            continue  # "a x, ,b y" or a trailing comma: nothing there
        if len(words) > 2 or not _KEY.fullmatch(words[0]):
            raise _bad(f"Upload-Metadata holds {item.strip()[:40]!r}, which is no `key base64value` pair.")
        key = words[0]
        if key in metadata:
            raise _bad(f"Upload-Metadata names {key!r} twice.")
        if len(words) == 1:
            metadata[key] = None
            continue
        try:
            metadata[key] = base64.b64decode(words[1], validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise _bad(f"The Upload-Metadata value of {key!r} is not base64 of UTF-8 text.") from None
    return metadata


def format_metadata(metadata: dict[str, str | None]) -> str:
    """Upload-Metadata as a HEAD answers it: the pairs as they were sent."""
    pairs = []
    for key, value in metadata.items():
        pairs.append(key if value is None else f"{key} {base64.b64encode(value.encode()).decode()}")
    return ",".join(pairs)


def parse_checksum(value: str | None) -> tuple[str, bytes] | None:
    """Upload-Checksum: `ALGORITHM BASE64DIGEST`; 400 for another algorithm than the ones offered."""
    if value is None:
        return None
    words = value.split()
    if len(words) != 2:
        raise _bad(
            "Upload-Checksum must be `ALGORITHM BASE64DIGEST`, e.g. `sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=`."
        )
    algorithm = words[0].lower()
    if algorithm not in tus.CHECKSUM_ALGORITHMS:
        offered = ", ".join(tus.CHECKSUM_ALGORITHMS)
        raise _bad(
            f"The checksum algorithm {words[0][:20]!r} is not supported: use {offered}.",
            "checksum_unsupported",
        )
    try:
        digest = base64.b64decode(words[1], validate=True)
    except binascii.Error:
        raise _bad("The Upload-Checksum digest is not base64.") from None
    return algorithm, digest


def parse_defer_length(value: str | None) -> bool:
    if value is None:
        return False
    if value.strip() != "1":
        raise _bad("Upload-Defer-Length, when sent, must be 1.")
    return True


def upload_id_of(url: str) -> str:
    """The upload id of an upload URL in a final's Upload-Concat, absolute or relative to this server."""
    path = urlsplit(url).path
    prefix = PREFIX + "/"
    if not path.startswith(prefix) or "/" in path[len(prefix) :].rstrip("/"):
        raise ApiError(400, "concat_invalid", f"{url[:80]!r} is no tus upload URL of this server.")
    return path[len(prefix) :].rstrip("/")


def parse_concat(value: str | None) -> tuple[ConcatRole | None, list[str]]:
    """Upload-Concat: `partial`, or `final;URL URL...` (the partial uploads' URLs, in order)."""
    if value is None:
        return None, []
    value = value.strip()
    if value == "partial":
        return ConcatRole.PARTIAL, []
    kind, _, urls = value.partition(";")
    if kind.strip() != "final":
        raise _bad("Upload-Concat must be `partial` or `final;URL URL...`.")
    ids = [upload_id_of(url) for url in urls.split()]
    if not ids:
        raise ApiError(400, "concat_invalid", "A final upload names its partial uploads' URLs.")
    return ConcatRole.FINAL, ids


def effective_method() -> str:
    """The request's method, or the one a POST stands for (X-HTTP-Method-Override)."""
    override = request.headers.get("X-HTTP-Method-Override", "").strip().upper()
    if override and request.method == "POST":
        return override
    return request.method


# -- the protocol around every request ---------------------------------------------------------------------


def _tus_headers(response: Response) -> Response:
    response.headers["Tus-Resumable"] = VERSION
    if response.status_code in STATUS_TEXT:
        response.status = STATUS_TEXT[response.status_code]
    if response.status_code == 412:
        response.headers["Tus-Version"] = VERSION
    if response.status_code >= 400 and g.get("tus_location"):
        # A creation whose upload was made but whose first bytes were refused: the client may resume.
        response.headers["Location"] = g.tus_location
    if response.status_code == 204:
        response.headers.pop("Content-Type", None)  # no content, so no type either
    if effective_method() == "HEAD" and response.status_code < 400:
        # A HEAD's answer is its headers (werkzeug sends no body to a HEAD): no type to name. Its
        # refusals keep the JSON's type and length, as a GET would answer them.
        response.headers.pop("Content-Type", None)
    return response


@bp.after_app_request
def add_tus_headers(response: Response) -> Response:
    """Every answer under the tus path says its version, whatever answered it (a 404 of the router, a
    503)."""
    if request.path == PREFIX or request.path.startswith(PREFIX + "/"):
        return _tus_headers(response)
    return response


@bp.before_request
def require_version() -> Any:
    """412 for a request of another tus version, or none (OPTIONS asks which versions there are)."""
    if effective_method() == "OPTIONS":
        return None
    sent = request.headers.get("Tus-Resumable")
    if sent is None or sent.strip() != VERSION:
        message = f"This server speaks tus {VERSION}: send Tus-Resumable: {VERSION}."
        return ApiError(412, "unsupported_tus_version", message).to_response()
    if request.method == "POST" and effective_method() not in ("POST", *OVERRIDABLE):
        return ApiError(
            400, "invalid_header", f"X-HTTP-Method-Override may be {', '.join(OVERRIDABLE)}."
        ).to_response()
    return None


def _upload_url(upload_id: str) -> str:
    return url_for("tus.head_upload", upload_id=upload_id, _external=True)


def _expires(state: tus.TusState) -> dict[str, str]:
    return {"Upload-Expires": http_date(state.expires_at)} if state.expires_at is not None else {}


def _own_upload(upload_id: str) -> RecordingUpload:
    """The telecaller's tus upload: anyone else's, or an upload of the chunk API, is no upload here."""
    try:
        upload = upload_for(g.user, upload_id)
    except Forbidden:
        raise NotFound("No such upload.") from None
    if upload.kind is not UploadKind.TUS or upload.telecaller_id != g.user.id:
        raise NotFound("No such upload.")
    return upload


def _body_bounded() -> int | None:
    """The PATCH's Content-Length; a body without one (chunked) is cut off past MAX_RECORDING_BYTES."""
    limit = current_app.config["MAX_RECORDING_BYTES"]
    if request.content_length is None:
        # One byte more than the limit: at exactly the limit werkzeug cannot tell the end from more.
        request.max_content_length = limit + 1
    return request.content_length


def _append(upload: RecordingUpload, *, offset: int, length: int | None) -> tus.TusState:
    """The request's body from offset into upload, as tus.append takes it."""
    checksum = parse_checksum(request.headers.get("Upload-Checksum"))
    content_length = _body_bounded()
    try:
        return tus.append(
            upload,
            offset=offset,
            body=request.stream,
            length=length,
            checksum=checksum,
            content_length=content_length,
        )
    except RequestEntityTooLarge:
        limit = current_app.config["MAX_RECORDING_BYTES"]
        raise ApiError(413, "too_large", f"A recording may be at most {limit} bytes.", limit=limit) from None
    except ClientDisconnected as error:  # werkzeug's own, where the server does not terminate the body
        if isinstance(error, IncompleteBody):
            raise
        raise IncompleteBody() from None


# -- the operations -----------------------------------------------------------------------------------------

_TUS: dict[str, Any] = {
    "HTTP_401": UNAUTHORIZED,
    "HTTP_412": (Error, "No `Tus-Resumable: 1.0.0` (`unsupported_tus_version`)."),
}
_UPLOAD: dict[str, Any] = {
    **_TUS,
    "HTTP_403": (Error, "Not a telecaller's token (`forbidden`)."),
    "HTTP_404": (Error, "No such upload of yours (`not_found`)."),
    "HTTP_410": (Error, "The upload expired or was terminated (`upload_expired`): start a new one."),
}


def _discovery(allow: str):
    headers = {
        "Tus-Version": VERSION,
        "Tus-Extension": ",".join(EXTENSIONS),
        "Tus-Max-Size": str(current_app.config["MAX_RECORDING_BYTES"]),
        "Tus-Checksum-Algorithm": ",".join(tus.CHECKSUM_ALGORITHMS),
        "Allow": allow,
    }
    return "", 204, headers


@bp.route("/", methods=["OPTIONS"], strict_slashes=False)
def options():
    """tus discovery: the version, extensions, checksum algorithms and largest upload (no token)"""
    return _discovery("OPTIONS, POST")


@bp.route("/<upload_id>", methods=["OPTIONS"])
def options_upload(upload_id: str):
    """tus discovery at an upload's URL"""
    return _discovery("OPTIONS, HEAD, PATCH, DELETE, POST")


@bp.post("/", strict_slashes=False)
@api_auth(Role.TELECALLER)
@operation(
    "createTusUpload",
    "recordings",
    HTTP_201=(None, "Created: its URL in `Location`, `Upload-Expires`, and `Upload-Offset` with a body."),
    HTTP_400=(
        Error,
        "A malformed tus header (`invalid_header`), no `call_log_id` in `Upload-Metadata` "
        "(`invalid_metadata`), unusable partial uploads (`concat_invalid`), a checksum of another "
        "algorithm (`checksum_unsupported`), a body cut short (`incomplete_body`: the upload exists, its "
        "`Location` is in the answer).",
    ),
    HTTP_403=(Error, "Not a telecaller's token, or not the telecaller who logged the call (`forbidden`)."),
    HTTP_404=(Error, "No such call log, or a partial upload that is no upload of yours (`not_found`)."),
    HTTP_409=(Error, "A partial upload is not in a state to be concatenated (`upload_state_conflict`)."),
    HTTP_413=(Error, "`Upload-Length` is over `Tus-Max-Size` (`too_large`, with `limit`)."),
    HTTP_415=(Error, "A body with another type than `application/offset+octet-stream`."),
    HTTP_422=(Error, "The bytes are not audio (`not_a_recording`), a bad `sha256` (`invalid_upload`)."),
    HTTP_423=(Error, "Another request writes the upload (`upload_locked`)."),
    **_TUS,
    HTTP_503=unavailable("storage", "queue", busy=True),
)
def create_upload():
    """Create a tus upload (creation, creation-with-upload, creation-defer-length, concatenation)"""
    if effective_method() != "POST":  # an override is for an upload's URL
        raise MethodNotAllowed(["OPTIONS", "POST"], "X-HTTP-Method-Override is for an upload's URL.")
    return _create()


def _create():
    length = parse_size("Upload-Length", request.headers.get("Upload-Length"))
    deferred = parse_defer_length(request.headers.get("Upload-Defer-Length"))
    concat, partial_ids = parse_concat(request.headers.get("Upload-Concat"))
    metadata = parse_metadata(request.headers.get("Upload-Metadata"))
    if length is not None and deferred:
        raise _bad("Send Upload-Length or Upload-Defer-Length: 1, not both.")
    if length is None and not deferred and concat is not ConcatRole.FINAL:
        raise _bad("Send Upload-Length, or Upload-Defer-Length: 1 if the length is not known yet.")
    limit = current_app.config["MAX_RECORDING_BYTES"]
    if length is not None and length > limit:
        raise ApiError(
            413, "too_large", f"A recording may be at most {limit} bytes (Tus-Max-Size).", limit=limit
        )
    call_log = None
    if concat is not ConcatRole.PARTIAL or metadata.get("call_log_id") is not None:
        raw = metadata.get("call_log_id")
        if raw is None or not _DIGITS.fullmatch(raw.strip()):
            raise ApiError(400, "invalid_metadata", "Upload-Metadata needs the call_log_id of the call.")
        call_log = _owned_call_log(int(raw.strip()))
    partials = [_own_upload(upload_id) for upload_id in partial_ids]
    with_body = request.mimetype == OFFSET_OCTET_STREAM
    if not with_body and request.mimetype and _has_body():
        message = f"The first bytes of an upload go as {OFFSET_OCTET_STREAM}."
        raise ApiError(415, "unsupported_media_type", message)
    upload = tus.create(g.user, call_log, length=length, metadata=metadata, concat=concat, partials=partials)
    location = _upload_url(upload.id)
    g.tus_location = location
    if with_body and concat is not ConcatRole.FINAL:
        state = _append(upload, offset=0, length=None)
        headers = {"Upload-Offset": str(state.offset)}
    else:
        state = tus.state(upload)
        headers = {}
    return "", 201, {"Location": location, **headers, **_expires(state)}


def _has_body() -> bool:
    return bool(request.content_length) or "chunked" in request.headers.get("Transfer-Encoding", "").lower()


def _owned_call_log(call_log_id: int):
    """The call log, if the telecaller asking logged it (as the chunk API's creation checks)."""
    call_log = call_log_for(g.user, call_log_id)
    if call_log.telecaller_id != g.user.id:
        raise ApiError(403, "forbidden", "Only the telecaller who logged the call can upload its recording.")
    return call_log


@bp.route("/<upload_id>", methods=["HEAD"])
@api_auth(Role.TELECALLER)
def head_upload(upload_id: str):
    """An upload's offset, length, metadata and expiry, to resume it (no body, also for errors)"""
    return _head(upload_id)


def _head(upload_id: str):
    upload = _own_upload(upload_id)
    state = tus.state(upload)
    headers = {"Cache-Control": "no-store", "Upload-Offset": str(state.offset), **_expires(state)}
    if state.length is None:
        headers["Upload-Defer-Length"] = "1"
    else:
        headers["Upload-Length"] = str(state.length)
    if state.metadata:
        headers["Upload-Metadata"] = format_metadata(state.metadata)
    if state.concat is ConcatRole.PARTIAL:
        headers["Upload-Concat"] = "partial"
    elif state.concat is ConcatRole.FINAL:
        headers["Upload-Concat"] = "final;" + " ".join(_upload_url(i) for i in state.partial_ids)
    return "", 200, headers


@bp.patch("/<upload_id>")
@api_auth(Role.TELECALLER)
@operation(
    "patchTusUpload",
    "recordings",
    HTTP_204=(None, "Taken: the new `Upload-Offset`, and `Upload-Expires`."),
    HTTP_400=(
        Error,
        "A missing or malformed `Upload-Offset`, `Upload-Length` or `Upload-Checksum` (`invalid_header`, "
        "`checksum_unsupported`), a length that cannot be (`length_conflict`), a body cut short "
        "(`incomplete_body`).",
    ),
    HTTP_409=(
        Error,
        "`Upload-Offset` is not the upload's (`offset_mismatch`, with `offset`, and the upload's "
        "`Upload-Offset`), or the upload takes no more bytes (`upload_state_conflict`).",
    ),
    HTTP_413=(Error, "The body goes past the upload's length or `Tus-Max-Size` (`too_large`)."),
    HTTP_415=(Error, f"The body is not `{OFFSET_OCTET_STREAM}` (`unsupported_media_type`)."),
    HTTP_422=(Error, "The first bytes are not audio (`not_a_recording`, with `reason`): the upload failed."),
    HTTP_423=(Error, "Another request writes the upload right now (`upload_locked`): retry."),
    **{**_UPLOAD, "HTTP_403": (Error, "Not a telecaller's token, or a final upload (`forbidden`).")},
    HTTP_503=unavailable("storage", "queue", busy=True),
)
def patch_upload(upload_id: str):
    """Send bytes from `Upload-Offset` on (and a deferred `Upload-Length`)"""
    return _patch(upload_id)


def _patch(upload_id: str):
    if request.mimetype != OFFSET_OCTET_STREAM:
        message = f"Send the bytes as they are, with Content-Type: {OFFSET_OCTET_STREAM}."
        raise ApiError(415, "unsupported_media_type", message)
    offset = parse_size("Upload-Offset", request.headers.get("Upload-Offset"))
    if offset is None:
        raise _bad("Send Upload-Offset: where these bytes start.")
    length = parse_size("Upload-Length", request.headers.get("Upload-Length"))
    upload = _own_upload(upload_id)
    if upload.concat is ConcatRole.FINAL:
        raise ApiError(403, "forbidden", "A final upload is made of its partial uploads: it takes no bytes.")
    state = _append(upload, offset=offset, length=length)
    return "", 204, {"Upload-Offset": str(state.offset), **_expires(state)}


@bp.delete("/<upload_id>")
@api_auth(Role.TELECALLER)
@operation(
    "deleteTusUpload",
    "recordings",
    HTTP_204=(None, "Terminated: its bytes are gone; its URL answers 410 from now on."),
    HTTP_409=(Error, "The upload is being made into a recording, or is one (`upload_state_conflict`)."),
    HTTP_423=(Error, "A PATCH writes the upload right now (`upload_locked`): retry."),
    **_UPLOAD,
    HTTP_503=unavailable("storage"),
)
def delete_upload(upload_id: str):
    """Terminate an upload (tus termination)"""
    return _delete(upload_id)


def _delete(upload_id: str):
    upload = _own_upload(upload_id)
    tus.terminate(upload)
    return "", 204


_OVERRIDDEN: dict[str, Callable[[str], Any]] = {"PATCH": _patch, "DELETE": _delete, "HEAD": _head}


@bp.post("/<upload_id>")
@api_auth(Role.TELECALLER)
@operation(
    "overrideTusUpload",
    "recordings",
    HTTP_200=(None, "As HEAD (`X-HTTP-Method-Override: HEAD`), without a body."),
    HTTP_204=(None, "As PATCH or DELETE."),
    HTTP_400=(
        Error,
        "No or another `X-HTTP-Method-Override` (`invalid_header`), or as PATCH (`incomplete_body` for a "
        "body cut short).",
    ),
    HTTP_409=(Error, "As PATCH or DELETE."),
    HTTP_413=(Error, "As PATCH."),
    HTTP_415=(Error, "As PATCH."),
    HTTP_422=(Error, "As PATCH."),
    HTTP_423=(Error, "As PATCH or DELETE."),
    **_UPLOAD,
    HTTP_503=unavailable("storage", "queue", busy=True),
)
def override_upload(upload_id: str):
    """PATCH, DELETE or HEAD for clients that can only POST (`X-HTTP-Method-Override`)"""
    handler = _OVERRIDDEN.get(effective_method())
    if handler is None:
        raise _bad(f"A POST to an upload's URL stands for X-HTTP-Method-Override: {', '.join(OVERRIDABLE)}.")
    return handler(upload_id)
