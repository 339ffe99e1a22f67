"""Call logs to attach recordings to, recordings cut into chunks, and what the local storage holds."""

from __future__ import annotations

import io
import itertools
import threading
from pathlib import Path

import requests

from edcrm.extensions import db
from edcrm.models import Branch, CallLog, CallOutcome, Lead, RecordingUpload
from edcrm.recordings import uploads

_phones = itertools.count(9_800_000_000)


def make_call_log(branch: Branch, telecaller) -> CallLog:
    """A committed connected call of telecaller's, to a new lead of branch."""
    lead = Lead(
        branch_id=branch.id,
        telecaller_id=telecaller.id,
        student_name="Student",
        phone_number=f"+91{next(_phones)}",
    )
    call_log = CallLog(
        lead=lead, telecaller_id=telecaller.id, outcome=CallOutcome.CONNECTED, duration_seconds=61
    )
    db.session.add(call_log)
    db.session.commit()
    return call_log


def split(data: bytes, parts: int) -> list[bytes]:
    """data in `parts` chunks of equal size (the last one shorter)."""
    size = -(-len(data) // parts)
    return [data[i : i + size] for i in range(0, len(data), size)]


def chunked(telecaller, call_log, data: bytes, parts: int, *, order=None, **announced) -> RecordingUpload:
    """A chunked upload of data in `parts` chunks, sent in `order` (default: backwards)."""
    chunks = split(data, parts)
    upload = uploads.create_session(
        telecaller, call_log, filename="call.bin", expected_chunks=len(chunks), **announced
    )
    for index in order or reversed(range(len(chunks))):
        uploads.store_chunk(upload, index, io.BytesIO(chunks[index]))
    return upload


def storage_files(app) -> list[str]:
    """The files of app's local storage, as sorted paths relative to its root."""
    root = Path(app.config["STORAGE_URL"].removeprefix("file://"))
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def race_the_limit(app, auth, call_log_id: int, live_server: str) -> None:
    """12 chunks of 30 bytes PUT at once against a limit of 100: 3 are kept, 9 are 413."""
    app.config.update(MAX_RECORDING_BYTES=100, MAX_CHUNK_BYTES=40)
    base = f"{live_server}/api/recordings/uploads"
    body = {"call_log_id": call_log_id, "filename": "c.wav", "expected_chunks": 12}
    upload_id = requests.post(base, json=body, headers=auth, timeout=10).json()["upload_id"]
    barrier = threading.Barrier(12)

    def send(index: int) -> int:
        barrier.wait()
        url = f"{base}/{upload_id}/chunks/{index}"
        return requests.put(url, data=b"z" * 30, headers=auth, timeout=30).status_code

    results: list[int] = []
    threads = [threading.Thread(target=lambda i=i: results.append(send(i))) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [200] * 3 + [413] * 9  # 3 x 30 fit in 100, a fourth does not
    received = requests.get(f"{base}/{upload_id}", headers=auth, timeout=10).json()["received"]
    assert len(received) == 3
    assert sorted(storage_files(app)) == [f"uploads/{upload_id}/chunks/{index:05d}" for index in received]
