"""Recordings: the resumable chunk API and the one-shot upload (the telecaller who owns the call log),
and the download (that telecaller, or an admin of the branch)."""

from __future__ import annotations

from typing import Any

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
from .inputs import parse
from .schemas.base import Error
from .schemas.recordings import (
    JobAccepted,
    RecordingUpload,
    SingleUploadAccepted,
    Upload,
    UploadCreated,
    UploadProgress,
    UploadRequest,
)
from .serializers import upload_json, upload_progress_json
from .spec import FORBIDDEN, JSON_BODY, NOT_FOUND, UNAUTHORIZED, operation, unavailable

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


_TELECALLERS: dict[str, Any] = {"HTTP_401": UNAUTHORIZED, "HTTP_403": FORBIDDEN, "HTTP_404": NOT_FOUND}


@bp.post("/recordings/uploads")
@api_auth(Role.TELECALLER)
@operation(
    "createRecordingUpload",
    "recordings",
    HTTP_201=(UploadCreated, "Open: PUT its chunks, then complete it."),
    **_TELECALLERS,
    **{
        **JSON_BODY,
        "HTTP_413": (Error, "total_size is over MAX_RECORDING_BYTES (`too_large`, with `limit`)."),
    },
)
def create_upload(json: UploadRequest):
    """Open a resumable chunked upload for a call the telecaller logged"""
    call_log = _owned_call_log(json.call_log_id)
    upload = uploads.create_session(
        g.user,
        call_log,
        filename=json.filename,
        expected_chunks=json.expected_chunks,
        total_size=json.total_size,
        sha256=json.sha256,
    )
    body = {"upload_id": upload.id, "max_chunk_bytes": current_app.config["MAX_CHUNK_BYTES"]}
    return body, 201, {"Location": f"/api/recordings/uploads/{upload.id}"}


@bp.put("/recordings/uploads/<upload_id>/chunks/<int:index>")
@api_auth(Role.TELECALLER)
@operation(
    "putRecordingChunk",
    "recordings",
    HTTP_200=(UploadProgress, "Kept: the upload's progress."),
    HTTP_409=(
        Error,
        "The upload takes no more chunks: it is complete, processing or deleted, also when that happened "
        "while this chunk was arriving (`upload_state_conflict`); nothing is kept.",
    ),
    HTTP_413=(
        Error,
        "The chunk is over MAX_CHUNK_BYTES, or the chunks received so far and this one would add up to "
        "more than MAX_RECORDING_BYTES (`too_large`, with `limit`); nothing is kept.",
    ),
    HTTP_415=(
        Error,
        "The body is not `application/octet-stream` (`unsupported_media_type`), e.g. a form: nothing "
        "is kept.",
    ),
    HTTP_422=(
        Error,
        "Checksum mismatch (`checksum_mismatch`, with `index`), an empty chunk, an index past the upload's "
        "chunks, or an X-Chunk-SHA256 that is not a SHA-256 (`invalid_upload`); nothing is kept.",
    ),
    **_TELECALLERS,
    HTTP_503=unavailable("storage", busy=True),
)
def put_chunk(upload_id: str, index: int):
    """Send chunk N (from 0) as the raw body; sending it again replaces it"""
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
    return upload_progress_json(upload)


@bp.get("/recordings/uploads/<upload_id>")
@api_auth(Role.TELECALLER)
@operation("getRecordingUpload", "recordings", HTTP_200=(Upload, "The upload."), **_TELECALLERS)
def get_upload(upload_id: str):
    """An upload's status and which chunks arrived"""
    return upload_json(upload_for(g.user, upload_id))


@bp.post("/recordings/uploads/<upload_id>/complete")
@api_auth(Role.TELECALLER)
@operation(
    "completeRecordingUpload",
    "recordings",
    HTTP_202=(JobAccepted, "The recordings job that finalizes the upload."),
    HTTP_409=(
        Error,
        "Chunks are missing (`chunks_missing`, with `missing`: their indexes), or the upload was deleted.",
    ),
    HTTP_422=(Error, "The chunks do not add up to the announced total_size (`invalid_upload`)."),
    **_TELECALLERS,
    HTTP_503=unavailable("queue"),
)
def complete_upload(upload_id: str):
    """Every chunk arrived: assemble them into the recording (idempotent)"""
    upload = upload_for(g.user, upload_id)
    job_id = uploads.complete(upload)
    return {"job_id": job_id}, 202


@bp.delete("/recordings/uploads/<upload_id>")
@api_auth(Role.TELECALLER)
@operation(
    "deleteRecordingUpload",
    "recordings",
    HTTP_204=(None, "Deleted: the chunks are gone and the upload is `cancelled`."),
    HTTP_409=(Error, "The upload is being processed (`upload_state_conflict`)."),
    **_TELECALLERS,
    HTTP_503=unavailable("storage"),
)
def delete_upload(upload_id: str):
    """Abandon an upload; its chunks are removed"""
    upload = upload_for(g.user, upload_id)
    uploads.cancel(upload)
    return "", 204


@bp.post("/call-logs/<int:call_log_id>/recording")
@api_auth(Role.TELECALLER)
@operation(
    "uploadRecording",
    "recordings",
    form=RecordingUpload,
    HTTP_202=(
        SingleUploadAccepted,
        "Stored; the recordings job finalizes it. Location: the upload "
        "(`GET /api/recordings/uploads/UPLOAD_ID`), whose status says when the recording is made.",
    ),
    HTTP_413=(Error, "The file is over MAX_RECORDING_BYTES (`too_large`, with `limit`); nothing is kept."),
    HTTP_415=(Error, "Not multipart/form-data (`unsupported_media_type`); nothing is kept."),
    HTTP_422=(
        Error,
        "No file part (`validation_failed`, with `fields`), or an empty file (`invalid_upload`); nothing is "
        "kept.",
    ),
    **_TELECALLERS,
    HTTP_503=unavailable("storage", "queue", busy=True),
)
def upload_recording(call_log_id: int):
    """Upload a whole recording in one request"""
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
    form = parse(RecordingUpload, {"file": part})
    upload = uploads.receive_single_upload(g.user, call_log, form.file.stream, form.file.filename)
    body = {"job_id": upload.job_id, "upload_id": upload.id}
    return body, 202, {"Location": f"/api/recordings/uploads/{upload.id}"}


@bp.get("/call-logs/<int:call_log_id>/recording/content")
@api_auth()
@operation(
    "downloadRecording",
    "recordings",
    HTTP_200=(None, "The audio, streamed."),
    HTTP_302=(None, "A short-lived signed URL of the storage (S3), in Location."),
    **_TELECALLERS,
    HTTP_503=unavailable("storage"),
)
def recording_content(call_log_id: int):
    """The call's recording (the telecaller who logged it, or the branch's admin)"""
    # A redirect to a short-lived signed URL where the storage has them (S3), else streamed.
    call_log = call_log_for(g.user, call_log_id)
    recording = call_log.recording
    if recording is None:
        raise NotFound(f"Call log {call_log_id} has no recording.")
    return download(recording)
