"""What the end-to-end tus tests (tests/integration/test_tus_clients.py, tests/browser/test_uppy.py)
check after a client's upload: the recording files they send, the upload's end, and the Recording's
size, SHA-256 and downloaded bytes against the source's."""

from __future__ import annotations

import hashlib
import random
import shutil
from pathlib import Path

import requests

from tests.support.audio_samples import wav
from tests.support.processes import wait_for
from tests.support.services import service_unavailable
from tests.support.stack import Stack

MIB = 1024 * 1024
TUS = "/api/recordings/tus/"
#: The Node clients: tus_upload.mjs, reference_server.mjs, uppy.html (`make node-clients` installs them).
CLIENTS = Path(__file__).resolve().parents[1] / "clients"
#: 5 MiB parts (TUS_PART_BYTES' least): whole parts, tails and promoted last parts in a few MiB.
PART = 5 * MIB
SETTINGS = {"TUS_PART_BYTES": str(PART), "BODY_TIMEOUT_S": "10"}
DONE = {"completed", "failed", "cancelled"}


def require_node_clients(*, browser: bool = False) -> Path:
    """tests/clients with its node_modules, and Node to run them (the bundle only, for a browser): or a
    skip (a failure under CI=true) saying how to get them."""
    if not browser and shutil.which("node") is None:
        service_unavailable("Node.js", "no `node` on PATH; `apt-get install nodejs npm`")
    needed = CLIENTS / "node_modules" / ("uppy" if browser else "tus-js-client")
    if not needed.is_dir():
        service_unavailable(needed.name, "tests/clients/node_modules is missing; run `make node-clients`")
    return CLIENTS


def recording(path: Path, size: int, seed: int = 1) -> bytes:
    """A WAV recording of exactly size bytes (random after its first second: misplaced bytes show) at
    path; its bytes."""
    head = wav(1.0)
    data = head + random.Random(seed).randbytes(size - len(head))
    path.write_bytes(data)
    return data


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def upload_id_of(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def finished(stack: Stack, upload_id: str, timeout: float = 120) -> dict:
    """The upload's status once it is completed, failed or cancelled."""
    return wait_for(
        lambda: (
            (status := stack.api(f"/api/recordings/uploads/{upload_id}").json())["status"] in DONE and status
        ),
        timeout=timeout,
        what=f"upload {upload_id} to finish",
        watch=stack.worker,
    )


def downloaded_sha256(stack: Stack, call_log_id: int) -> str:
    """The SHA-256 of the recording as a phone downloads it (following a redirect to S3 without the token)."""
    answer = stack.api(f"/api/call-logs/{call_log_id}/recording/content", allow_redirects=False, stream=True)
    if answer.status_code in (301, 302, 303, 307):
        answer = requests.get(answer.headers["Location"], timeout=60, stream=True)
    assert answer.status_code == 200, answer.text
    digest = hashlib.sha256()
    for block in answer.iter_content(MIB):
        digest.update(block)
    return digest.hexdigest()


def assert_recorded(stack: Stack, call_log_id: int, upload_id: str, data: bytes) -> dict:
    """The upload became the call log's Recording: same size and SHA-256 as data, and the same bytes back."""
    status = finished(stack, upload_id)
    assert status["status"] == "completed", status
    recording = stack.api(f"/api/call-logs/{call_log_id}").json()["recording"]
    assert recording is not None and recording["id"] == status["recording_id"]
    assert (recording["size"], recording["sha256"]) == (len(data), sha256(data))
    assert downloaded_sha256(stack, call_log_id) == sha256(data)
    return recording


def no_leftovers(stack: Stack, upload_id: str) -> None:
    """No unfinished multipart upload, and no staged tail of upload_id, in the bucket."""
    s3 = stack.s3.client()
    assert s3.list_multipart_uploads(Bucket=stack.bucket).get("Uploads", []) == []
    listed = s3.list_objects_v2(Bucket=stack.bucket, Prefix="edcrm/uploads/")
    assert [item["Key"] for item in listed.get("Contents", []) if upload_id in item["Key"]] == []


def tus_headers(stack: Stack) -> dict[str, str]:
    return {"Tus-Resumable": "1.0.0", "Authorization": f"Bearer {stack.token}"}
