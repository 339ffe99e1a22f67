"""tus over real HTTP (a threaded WSGI server on loopback): tuspy (PyPI's tus client) sends a recording in
small PATCHes with per-chunk checksums, resumed by a second client from the server's offset; and a
second PATCH while one is in flight is refused while the first completes."""

from __future__ import annotations

import hashlib
import io
import threading
import time

import pytest
import requests
from tusclient import client as tus_client
from werkzeug.serving import make_server

from edcrm.extensions import db
from edcrm.models import RecordingUpload
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


def wait_for_the_lease(upload_id: str) -> None:
    """Until a request holds the upload (on SQLite the lock is a lease written on its row)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        db.session.expire_all()
        if db.session.get(RecordingUpload, upload_id).locked_by is not None:
            return
        time.sleep(0.02)
    raise AssertionError("the first PATCH never took the upload's lock")


def test_a_second_patch_while_one_is_in_flight_is_423_and_the_first_completes(
    tus, auth, call_log, live_server
):
    data = wav(1.0)
    url = live_server + tus.new(call_log.id, len(data))
    headers = {**auth, "Tus-Resumable": "1.0.0", "Content-Type": "application/offset+octet-stream"}
    halfway, release = threading.Event(), threading.Event()

    def slow_body():
        yield data[:3000]
        halfway.set()
        release.wait(10)
        yield data[3000:]

    first: list[requests.Response] = []
    sender = threading.Thread(
        target=lambda: first.append(
            requests.patch(url, data=slow_body(), headers={**headers, "Upload-Offset": "0"}, timeout=30)
        )
    )
    sender.start()
    assert halfway.wait(10)
    wait_for_the_lease(url.rsplit("/", 1)[-1])  # the first PATCH holds the upload and reads its body
    second = requests.patch(url, data=data, headers={**headers, "Upload-Offset": "0"}, timeout=30)
    head = requests.head(url, headers=headers, timeout=30)  # never behind the lock
    release.set()
    sender.join(30)

    assert second.status_code == 423
    assert second.json()["error"]["code"] == "upload_locked"
    assert head.status_code == 200
    assert first[0].status_code == 204
    assert first[0].headers["Upload-Offset"] == str(len(data))
