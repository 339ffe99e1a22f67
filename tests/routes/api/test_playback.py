"""Playing a recording: GET /api/call-logs/ID/recording/content (with the token) and
GET /api/call-logs/ID/recording/url, whose URL plays without it: the app's signed URL on the local
storage, a presigned URL on S3 (moto's server over HTTP). Both answer Range with 206, and stream."""

from __future__ import annotations

import hashlib
import io
import os
import time
import tracemalloc
import uuid
from datetime import datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from itsdangerous import TimestampSigner

from edcrm.extensions import db
from edcrm.models import Recording, Role
from edcrm.models.types import utcnow
from edcrm.routes.recording_download import PLAYBACK_URL_SECONDS
from edcrm.storage import get_storage
from edcrm.storage.s3 import S3Storage
from tests.support.people import bearer, make_user
from tests.support.recordings import make_call_log

#: The bytes of a recording: every offset holds a different byte pattern, so a wrong range shows.
AUDIO = bytes(range(256)) * 40 + b"tail"


def store_recording(call_log, data: bytes = AUDIO, *, key: str | None = None, content_type="audio/mp4"):
    """A committed Recording of call_log whose bytes are in the app's storage under key."""
    upload_id = uuid.uuid4().hex
    key = key or f"recordings/{call_log.id}/{upload_id}"  # built from a multipart upload: no extension
    get_storage().save(key, io.BytesIO(data))
    recording = Recording(
        call_log_id=call_log.id,
        upload_id=upload_id,
        storage_key=key,
        size=len(data),
        content_type=content_type,
        sha256=hashlib.sha256(data).hexdigest(),
    )
    db.session.add(recording)
    db.session.commit()
    return recording


@pytest.fixture
def call_log(branch, telecaller):
    return make_call_log(branch, telecaller)


@pytest.fixture
def recording(call_log):
    return store_recording(call_log)


def content(client, call_log, user=None, **headers):
    auth = bearer(user) if user is not None else {}
    return client.get(f"/api/call-logs/{call_log.id}/recording/content", headers={**auth, **headers})


def playback(client, call_log, user) -> dict:
    response = client.get(f"/api/call-logs/{call_log.id}/recording/url", headers=bearer(user))
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


# -- the content route, on the local storage ----------------------------------------------------------


def test_the_whole_recording_says_it_takes_ranges(client, telecaller, call_log, recording):
    response = content(client, call_log, telecaller)

    assert response.status_code == 200
    assert response.data == AUDIO
    assert response.headers["Accept-Ranges"] == "bytes"
    assert response.headers["Content-Length"] == str(len(AUDIO))
    assert response.mimetype == "audio/mp4"
    # Its key has no extension (a multipart-built recording): the name comes from the type.
    assert (
        response.headers["Content-Disposition"] == f'attachment; filename="call-{call_log.id}-recording.m4a"'
    )


@pytest.mark.parametrize(
    ("header", "start", "stop"),
    [
        ("bytes=0-0", 0, 1),
        ("bytes=100-355", 100, 356),
        ("bytes=10000-", 10000, len(AUDIO)),  # open-ended: to the end
        ("bytes=-4", len(AUDIO) - 4, len(AUDIO)),  # the last 4 bytes (a player reading an MP4's moov)
        (f"bytes=10000-{len(AUDIO) * 2}", 10000, len(AUDIO)),  # past the end: up to it
    ],
)
def test_a_range_is_206_with_its_bytes(client, telecaller, call_log, recording, header, start, stop):
    response = content(client, call_log, telecaller, Range=header)

    assert response.status_code == 206
    assert response.data == AUDIO[start:stop]
    assert response.headers["Content-Range"] == f"bytes {start}-{stop - 1}/{len(AUDIO)}"
    assert response.headers["Content-Length"] == str(stop - start)
    assert response.headers["Accept-Ranges"] == "bytes"


@pytest.mark.parametrize("header", [f"bytes={len(AUDIO)}-", f"bytes={len(AUDIO) + 5}-{len(AUDIO) + 9}"])
def test_a_range_past_the_end_is_416(client, telecaller, call_log, recording, header):
    response = content(client, call_log, telecaller, Range=header)

    assert response.status_code == 416
    assert response.headers["Content-Range"] == f"bytes */{len(AUDIO)}"
    assert response.get_json()["error"]["code"] == "range_not_satisfiable"


def test_if_range_with_another_etag_answers_the_whole_file(client, telecaller, call_log, recording):
    etag = content(client, call_log, telecaller).headers["ETag"]

    same = content(client, call_log, telecaller, Range="bytes=0-9", **{"If-Range": etag})
    changed = content(client, call_log, telecaller, Range="bytes=0-9", **{"If-Range": '"other"'})

    assert (same.status_code, same.data) == (206, AUDIO[:10])
    assert (changed.status_code, changed.data) == (200, AUDIO)


def test_the_admin_of_the_branch_plays_it_and_no_one_else(
    client, branch, admin, call_log, recording, other_branch
):
    assert content(client, call_log, admin, Range="bytes=0-1").status_code == 206
    assert content(client, call_log, make_user(branch)).status_code == 403
    assert content(client, call_log, make_user(other_branch, Role.ADMIN)).status_code == 403
    assert content(client, call_log).status_code == 401


def test_a_call_without_a_recording_is_404(client, telecaller, call_log):
    assert content(client, call_log, telecaller).status_code == 404
    response = client.get(f"/api/call-logs/{call_log.id}/recording/url", headers=bearer(telecaller))
    assert response.status_code == 404


def test_a_recording_streams_and_is_never_read_whole_into_memory(client, telecaller, call_log):
    size = 24 * 1024 * 1024
    data = os.urandom(1024 * 1024) * 24
    store_recording(call_log, data)
    headers = bearer(telecaller)

    tracemalloc.start()
    try:
        response = client.get(
            f"/api/call-logs/{call_log.id}/recording/content", headers=headers, buffered=False
        )
        assert response.is_streamed
        digest, received = hashlib.sha256(), 0
        for block in response.response:
            digest.update(block)
            received += len(block)
        response.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert received == size
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
    assert peak < 8 * 1024 * 1024  # blocks, not the file's 24 MiB


# -- the playback URL, on the local storage -----------------------------------------------------------


def test_the_url_plays_without_the_token_and_seeks(client, telecaller, call_log, recording):
    before = utcnow()
    body = playback(client, call_log, telecaller)

    assert body["url"].startswith("http://localhost/api/recordings/play/")
    expires_at = datetime.fromisoformat(body["expires_at"])
    assert before + timedelta(seconds=PLAYBACK_URL_SECONDS - 5) <= expires_at
    assert expires_at <= utcnow() + timedelta(seconds=PLAYBACK_URL_SECONDS)

    whole = client.get(path_of(body["url"]))  # no Authorization header
    assert (whole.status_code, whole.data) == (200, AUDIO)
    assert whole.headers["Accept-Ranges"] == "bytes"
    assert whole.headers["Content-Disposition"].startswith("inline")

    part = client.get(path_of(body["url"]), headers={"Range": "bytes=256-511"})
    assert (part.status_code, part.data) == (206, AUDIO[256:512])
    assert part.headers["Content-Range"] == f"bytes 256-511/{len(AUDIO)}"

    head = client.head(path_of(body["url"]))
    assert (head.status_code, head.headers["Content-Length"], head.data) == (200, str(len(AUDIO)), b"")

    past = client.get(path_of(body["url"]), headers={"Range": f"bytes={len(AUDIO)}-"})
    assert past.status_code == 416
    assert past.headers["Content-Range"] == f"bytes */{len(AUDIO)}"


def test_the_admin_of_the_branch_gets_a_url_and_no_one_else(
    client, branch, admin, call_log, recording, other_branch
):
    assert playback(client, call_log, admin)["url"]
    url = f"/api/call-logs/{call_log.id}/recording/url"
    assert client.get(url, headers=bearer(make_user(branch))).status_code == 403
    assert client.get(url, headers=bearer(make_user(other_branch, Role.ADMIN))).status_code == 403
    assert client.get(url).status_code == 401


def assert_refused(response, status: int, code: str, app) -> None:
    assert response.status_code == status
    error = response.get_json()["error"]
    assert error["code"] == code
    # Nothing of where the file lives: no path, no key.
    storage_root = app.config["STORAGE_URL"].removeprefix("file://")
    text = response.get_data(as_text=True)
    assert storage_root not in text and "recordings/" not in text


def test_an_expired_url_is_410(app, client, telecaller, call_log, recording, monkeypatch):
    issued = time.time() - PLAYBACK_URL_SECONDS - 2
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: int(issued))
    url = playback(client, call_log, telecaller)["url"]
    monkeypatch.undo()

    assert_refused(client.get(path_of(url)), 410, "url_expired", app)


@pytest.mark.parametrize("forge", ["garbage", "altered", "other-secret"])
def test_a_forged_or_altered_url_is_403(app, client, telecaller, call_log, recording, forge):
    url = playback(client, call_log, telecaller)["url"]
    token = url.rsplit("/", 1)[1]
    if forge == "garbage":
        token = "not-a-token"
    elif forge == "altered":
        payload, rest = token.split(".", 1)
        token = payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB") + "." + rest
    else:
        app.config["SECRET_KEY"] = "another-secret"

    assert_refused(client.get(f"/api/recordings/play/{token}"), 403, "forbidden", app)


def test_a_url_for_a_recording_that_is_gone_is_404(client, telecaller, call_log, recording):
    url = playback(client, call_log, telecaller)["url"]
    db.session.delete(recording)
    db.session.commit()

    response = client.get(path_of(url))

    assert response.status_code == 404
    assert "recordings/" not in response.get_data(as_text=True)


# -- S3 (moto's server, over HTTP) ---------------------------------------------------------------------


@pytest.fixture
def on_s3(app, s3_server):
    bucket = s3_server.create_bucket()
    app.extensions["edcrm.storage"] = S3Storage(
        bucket, "edcrm", endpoint_url=s3_server.endpoint_url, region="us-east-1"
    )
    return s3_server


def test_on_s3_the_url_is_presigned_and_plays_with_a_plain_ranged_get(client, telecaller, call_log, on_s3):
    store_recording(call_log)
    body = playback(client, call_log, telecaller)

    assert body["url"].startswith(on_s3.endpoint_url)
    query = parse_qs(urlsplit(body["url"]).query)
    assert "X-Amz-Signature" in query
    assert int(query["X-Amz-Expires"][0]) == PLAYBACK_URL_SECONDS
    # A media player: a plain GET, no token, asking for a range.
    part = requests.get(body["url"], headers={"Range": "bytes=1000-1999"}, timeout=10)
    assert part.status_code == 206
    assert part.content == AUDIO[1000:2000]
    assert part.headers["Content-Range"] == f"bytes 1000-1999/{len(AUDIO)}"
    assert part.headers["Content-Type"] == "audio/mp4"  # the key has no extension: the type is passed
    assert f"call-{call_log.id}-recording.m4a" in part.headers["Content-Disposition"]
    whole = requests.get(body["url"], timeout=10)
    assert (whole.status_code, whole.content) == (200, AUDIO)


def test_on_s3_content_is_a_302_that_plays_without_the_token(client, telecaller, call_log, on_s3):
    store_recording(call_log)

    response = content(client, call_log, telecaller)

    assert response.status_code == 302
    location = response.headers["Location"]
    assert location.startswith(on_s3.endpoint_url)
    part = requests.get(location, headers={"Range": "bytes=-4"}, timeout=10)
    assert (part.status_code, part.content) == (206, b"tail")
