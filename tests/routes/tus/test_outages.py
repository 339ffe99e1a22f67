"""tus with a dependency down: 503 with Retry-After (a tus client retries it), the tus headers still on it,
nothing of the body kept, and the upload resumable once the dependency is back."""

from __future__ import annotations

import redis

from edcrm.routes.errors import RETRY_AFTER_S
from edcrm.storage import S3Storage
from tests.support.audio_samples import wav
from tests.support.jobs import run_jobs


def assert_unavailable(response, code: str) -> None:
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.headers["Retry-After"] == str(RETRY_AFTER_S)
    assert response.headers["Tus-Resumable"] == "1.0.0"
    assert response.json["error"]["code"] == code
    assert "127.0.0.1" not in response.get_data(as_text=True)


def test_with_s3_down_a_patch_is_503_and_is_taken_again_once_it_is_back(app, tus, call_log, s3_server):
    bucket = s3_server.create_bucket()
    app.extensions["edcrm.storage"] = S3Storage(
        bucket, "edcrm", endpoint_url=s3_server.endpoint_url, region="us-east-1"
    )
    data = wav(0.5)
    url = tus.new(call_log.id, len(data))
    with s3_server.stopped():
        response = tus.patch(url, 0, data[:1000])
        head = tus.head(url)  # the offset is the database's: no storage needed to resume
    assert_unavailable(response, "storage_unavailable")
    assert head.status_code == 200 and head.headers["Upload-Offset"] == "0"

    assert tus.patch(url, 0, data[:1000]).status_code == 204
    assert tus.head(url).headers["Upload-Offset"] == "1000"


def test_with_the_broker_down_the_last_patch_is_503_and_a_head_enqueues_the_job(
    tus, call_log, stub_broker, stub_worker, monkeypatch
):
    data = wav(0.5)
    url = tus.new(call_log.id, len(data))

    def down(message, *, delay=None):
        raise redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6390. Connection refused.")

    with monkeypatch.context() as patch:
        patch.setattr(stub_broker, "enqueue", down)
        response = tus.patch(url, 0, data)
    assert_unavailable(response, "queue_unavailable")

    # The bytes are committed: the client's resume HEAD finds them, and the job goes now.
    head = tus.head(url)
    assert head.headers["Upload-Offset"] == str(len(data))
    run_jobs(stub_broker, stub_worker, "recordings")
    upload = tus.client.get(f"/api/recordings/uploads/{url.rsplit('/', 1)[-1]}", headers=tus.auth).json
    assert upload["status"] == "completed", upload
