"""tuspy (PyPI's tus client) against the app over real HTTP (a threaded WSGI server on loopback): a
recording sent in small PATCHes with per-chunk checksums, resumed by a second client from the server's
offset, becomes its Recording."""

from __future__ import annotations

import hashlib
import io
import threading

import pytest
from tusclient import client as tus_client
from werkzeug.serving import make_server

from tests.support.audio_samples import wav
from tests.support.jobs import run_jobs


@pytest.fixture
def live_server(app):
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()


def test_tuspy_uploads_with_checksums_and_resumes(tus, auth, call_log, live_server, stub_broker, stub_worker):
    data = wav(1.5)
    sha256 = hashlib.sha256(data).hexdigest()
    client = tus_client.TusClient(f"{live_server}/api/recordings/tus/", headers=auth)
    metadata = {
        "call_log_id": str(call_log.id),
        "filename": "call.wav",
        "filetype": "audio/wav",
        "sha256": sha256,
    }
    first = client.uploader(
        file_stream=io.BytesIO(data), chunk_size=4000, metadata=metadata, upload_checksum=True
    )
    first.upload(stop_at=8000)  # the app is closed mid-way
    assert first.offset == 8000

    # Another run of the app: it knows the URL, asks the server where it is, sends the rest.
    second = client.uploader(
        file_stream=io.BytesIO(data), chunk_size=5000, url=first.url, upload_checksum=True
    )
    assert second.offset == 8000
    second.upload()
    assert second.offset == len(data)

    run_jobs(stub_broker, stub_worker, "recordings")
    recording = tus.client.get(f"/api/call-logs/{call_log.id}", headers=auth).json["recording"]
    assert (recording["size"], recording["sha256"]) == (len(data), sha256)
    assert tus.client.get(recording["download_url"], headers=auth).data == data
