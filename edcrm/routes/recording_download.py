"""What the API and the pages share about downloading a recording: a redirect to a short-lived signed URL
where the storage makes them (S3), else the bytes streamed from storage."""

from __future__ import annotations

from pathlib import PurePosixPath

from flask import Response, redirect
from werkzeug.wrappers import Response as BaseResponse

from ..models import Recording
from ..storage import BLOCK_SIZE, get_storage

#: How long a signed download URL stays valid.
DOWNLOAD_URL_SECONDS = 300


def download(recording: Recording) -> BaseResponse:
    storage = get_storage()
    filename = f"call-{recording.call_log_id}-recording{PurePosixPath(recording.storage_key).suffix}"
    url = storage.url_for_download(
        recording.storage_key,
        DOWNLOAD_URL_SECONDS,
        filename=filename,
        content_type=recording.content_type,
    )
    if url is not None:
        return redirect(url, 302)
    stream = storage.open(recording.storage_key)

    def blocks():
        with stream:
            while block := stream.read(BLOCK_SIZE):
                yield block

    headers = {
        "Content-Length": str(recording.size),
        "Content-Disposition": f'attachment; filename="{filename}"',
        "Cache-Control": "private, no-store",
    }
    return Response(blocks(), mimetype=recording.content_type, headers=headers)
