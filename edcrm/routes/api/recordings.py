"""Recordings: the resumable chunk API and the one-shot upload (the telecaller who owns the call log),
and the download (that telecaller, or an admin of the branch)."""

from __future__ import annotations

from flask import current_app, g, request
from werkzeug.exceptions import ClientDisconnected, NotFound, RequestEntityTooLarge

from ...auth import api_auth
from ...models import Role
from ...permissions import call_log_for, upload_for
from ...recordings import uploads
from ..bodies import IncompleteBody
from ..errors import ApiError
from ..recording_download import download
from . import bp
from .inputs import Fields, json_object

#: Room for the multipart framing around a one-shot recording.
MULTIPART_OVERHEAD = 64 * 1024

#: A chunk is its bytes as they are: a form's envelope (multipart, urlencoded) would be stored with it.
#: A request without Content-Type is octet-stream too (RFC 9110, 8.3).
CHUNK_MEDIA_TYPE = "application/octet-stream"


def _owned_call_log(call_log_id: object):
    """The call log, if the telecaller asking logged it (an admin of the branch only reads)."""
    call_log = call_log_for(g.user, call_log_id)
    if call_log.telecaller_id != g.user.id:
        raise ApiError(403, "forbidden", "Only the telecaller who logged the call can upload its recording.")
    return call_log


@bp.post("/recordings/uploads")
@api_auth(Role.TELECALLER)
def create_upload():
    fields = Fields(json_object())
    call_log_id = fields.integer("call_log_id", minimum=1)
    filename = fields.string("filename", max_length=1000)
    expected_chunks = fields.integer("expected_chunks", minimum=1, maximum=uploads.MAX_CHUNKS)
    total_size = fields.integer("total_size", minimum=1, required=False)
    sha256 = fields.string("sha256", max_length=64, required=False)
    fields.check()
    call_log = _owned_call_log(call_log_id)
    upload = uploads.create_session(
        g.user,
        call_log,
        filename=filename,
        expected_chunks=expected_chunks,
        total_size=total_size,
        sha256=sha256,
    )
    body = {"upload_id": upload.id, "max_chunk_bytes": current_app.config["MAX_CHUNK_BYTES"]}
    return body, 201, {"Location": f"/api/recordings/uploads/{upload.id}"}


@bp.put("/recordings/uploads/<upload_id>/chunks/<int:index>")
@api_auth(Role.TELECALLER)
def put_chunk(upload_id: str, index: int):
    upload = upload_for(g.user, upload_id)
    if request.mimetype not in ("", CHUNK_MEDIA_TYPE):
        message = f"Send the chunk's bytes as they are, with Content-Type: {CHUNK_MEDIA_TYPE}."
        raise ApiError(415, "unsupported_media_type", message)
    limit = current_app.config["MAX_CHUNK_BYTES"]
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "too_large", f"A chunk may be at most {limit} bytes.", limit=limit)
    if request.content_length is None:
        # Chunked transfer: werkzeug cuts the body off past max_content_length. One byte more than the
        # limit, because at exactly the limit it cannot tell the end from more to come, and refuses.
        request.max_content_length = limit + 1
    try:
        uploads.store_chunk(upload, index, request.stream, request.headers.get("X-Chunk-SHA256"))
    except RequestEntityTooLarge:
        raise ApiError(413, "too_large", f"A chunk may be at most {limit} bytes.", limit=limit) from None
    except ClientDisconnected:  # werkzeug's own, where the server does not terminate the body
        raise IncompleteBody() from None
    return _progress(upload)


def _progress(upload) -> dict:
    received = upload.received_indexes()
    return {"upload_id": upload.id, "received": received, "missing": upload.missing_indexes(received)}


@bp.get("/recordings/uploads/<upload_id>")
@api_auth(Role.TELECALLER)
def get_upload(upload_id: str):
    return upload_for(g.user, upload_id).to_dict()


@bp.post("/recordings/uploads/<upload_id>/complete")
@api_auth(Role.TELECALLER)
def complete_upload(upload_id: str):
    upload = upload_for(g.user, upload_id)
    job_id = uploads.complete(upload)
    return {"job_id": job_id}, 202


@bp.delete("/recordings/uploads/<upload_id>")
@api_auth(Role.TELECALLER)
def delete_upload(upload_id: str):
    upload = upload_for(g.user, upload_id)
    uploads.cancel(upload)
    return "", 204


@bp.post("/call-logs/<int:call_log_id>/recording")
@api_auth(Role.TELECALLER)
def upload_recording(call_log_id: int):
    call_log = _owned_call_log(call_log_id)
    if request.mimetype != "multipart/form-data":
        message = "Send the recording as multipart/form-data, in a part named `file`."
        raise ApiError(415, "unsupported_media_type", message)
    limit = current_app.config["MAX_RECORDING_BYTES"]
    # Werkzeug spools file parts to temporary files as it parses: the recording is never in memory.
    request.max_content_length = limit + MULTIPART_OVERHEAD
    try:
        part = request.files.get("file")
    except RequestEntityTooLarge:
        raise ApiError(413, "too_large", f"A recording may be at most {limit} bytes.", limit=limit) from None
    except ClientDisconnected:
        raise IncompleteBody() from None
    if part is None:
        raise ApiError(422, "validation_failed", "Invalid fields: file.", fields={"file": "is required"})
    job_id = uploads.start_single_upload(g.user, call_log, part.stream, part.filename)
    return {"job_id": job_id}, 202


@bp.get("/call-logs/<int:call_log_id>/recording/content")
@api_auth()
def recording_content(call_log_id: int):
    """The audio: a redirect to a short-lived signed URL where the storage has them (S3), else streamed."""
    call_log = call_log_for(g.user, call_log_id)
    recording = call_log.recording
    if recording is None:
        raise NotFound(f"Call log {call_log_id} has no recording.")
    return download(recording)
