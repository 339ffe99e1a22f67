"""Bodies that are cut off, form-encoded, over the recording limit or late, against a real gunicorn; and
the spools a killed worker leaves behind.

A cut-off body is sent on a raw socket: the headers announce a Content-Length, fewer bytes follow, and
the client shuts its side, as a phone losing its connection mid-upload does.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import uuid
from pathlib import Path

import requests

from tests.support.audio_samples import wav
from tests.support.server import Server, wait_until


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def audio(size: int) -> bytes:
    """`size` bytes that start like a WAV file (what the finalize checks is not these tests' concern)."""
    header = b"RIFF" + (size - 8).to_bytes(4, "little") + b"WAVEfmt "
    return header + bytes(index % 251 for index in range(size - len(header)))


def head(server: Server, method: str, path: str, length: int, token: str | None, **headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{server.port}", f"Content-Length: {length}"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    for name, (filename, data) in files.items():
        disposition = f'Content-Disposition: form-data; name="{name}"; filename="{filename}"'
        parts.append(f"--{boundary}\r\n{disposition}\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def stored(server: Server, under: str) -> list[str]:
    root = server.tmp_path / "storage" / under
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


def new_upload(server: Server, chunks: int, **extra) -> str:
    body = {"call_log_id": server.new_call_log(), "filename": "call.wav", "expected_chunks": chunks, **extra}
    response = server.api("POST", "/api/recordings/uploads", json=body)
    assert response.status_code == 201, response.text
    return response.json()["upload_id"]


def put_chunk(server: Server, upload_id: str, index: int, data: bytes) -> requests.Response:
    headers = {"Content-Type": "application/octet-stream"}
    return server.api(
        "PUT", f"/api/recordings/uploads/{upload_id}/chunks/{index}", data=data, headers=headers
    )


def upload_state(server: Server, upload_id: str) -> dict:
    return server.api("GET", f"/api/recordings/uploads/{upload_id}").json()


def error_code(answer: bytes) -> str | None:
    found = re.search(rb'"code"\s*:\s*"([a-z_]+)"', answer)
    return found.group(1).decode() if found else None


# -- cut off ------------------------------------------------------------------------------------------------


def test_a_cut_off_chunk_is_400_and_nothing_is_received(server):
    upload_id = new_upload(server, 1)
    token = server.telecaller["token"]
    path = f"/api/recordings/uploads/{upload_id}/chunks/0"
    request = head(server, "PUT", path, 16_044, token, Content_Type="application/octet-stream")

    status, answer = server.raw(request + audio(16_044)[:8_000])

    assert status == 400 and error_code(answer) == "incomplete_body", answer[:500]
    assert upload_state(server, upload_id)["received"] == []
    assert stored(server, f"uploads/{upload_id}") == []
    complete = server.api("POST", f"/api/recordings/uploads/{upload_id}/complete")
    assert complete.status_code == 409 and complete.json()["error"]["code"] == "chunks_missing"


def test_a_cut_off_one_shot_recording_is_400_and_nothing_is_kept(server):
    call_log_id = server.new_call_log()
    body, content_type = multipart({}, {"file": ("call.wav", audio(20_000))})
    path = f"/api/call-logs/{call_log_id}/recording"
    token = server.telecaller["token"]
    # The whole form, then silence: the length announced is never reached; or cut inside the file.
    for sent, announced in ((body, len(body) + 8_000), (body[:12_000], len(body))):
        status, answer = server.raw(
            head(server, "POST", path, announced, token, Content_Type=content_type) + sent
        )
        assert status == 400 and error_code(answer) == "incomplete_body", answer[:500]

    assert server.api("GET", f"/api/call-logs/{call_log_id}").json()["recording"] is None
    assert stored(server, "uploads") == []


def test_a_cut_off_csv_is_400_and_no_import_exists(server):
    admin = server.admin
    before = server.api("GET", "/api/imports", who=admin).json()["items"]
    csv = b"name,phone\n" + b"".join(b"Lead %d,98470%05d\n" % (n, n) for n in range(2_000))
    fields = {"telecaller_ids": str(server.telecaller["id"])}
    body, content_type = multipart(fields, {"file": ("leads.csv", csv)})
    for sent, announced in ((body, len(body) + 8_000), (body[: len(body) // 2], len(body))):
        request = head(server, "POST", "/api/imports", announced, admin["token"], Content_Type=content_type)
        status, answer = server.raw(request + sent)
        assert status == 400 and error_code(answer) == "incomplete_body", answer[:500]

    assert server.api("GET", "/api/imports", who=admin).json()["items"] == before
    assert stored(server, "imports") == []


def test_a_cut_off_csv_on_the_page_is_400_and_no_import_exists(server):
    admin = server.admin
    before = server.api("GET", "/api/imports", who=admin).json()["items"]
    browser = requests.Session()
    page = browser.get(f"{server.base}/login", timeout=30).text
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
    signed_in = browser.post(
        f"{server.base}/login",
        data={"csrf_token": token, "email": admin["email"], "password": admin["password"]},
        timeout=30,
        allow_redirects=False,
    )
    assert signed_in.status_code == 302
    form = browser.get(f"{server.base}/imports/new", timeout=30).text
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', form).group(1)
    cookie = "; ".join(f"{name}={value}" for name, value in browser.cookies.items())
    fields = {"csrf_token": token, "telecaller_ids": str(server.telecaller["id"])}
    body, content_type = multipart(fields, {"file": ("leads.csv", b"name,phone\nAsha,9847012301\n")})
    request = head(
        server, "POST", "/imports/new", len(body) + 8_000, None, Content_Type=content_type, Cookie=cookie
    )

    status, answer = server.raw(request + body)

    assert status == 400, answer[:500]
    assert b"before all of it arrived" in answer
    assert server.api("GET", "/api/imports", who=admin).json()["items"] == before
    assert stored(server, "imports") == []


# -- form-encoded, over the running total -----------------------------------------------------------------


def test_a_form_encoded_chunk_is_415_and_never_stored(server):
    """What `curl -X PUT -F chunk=@part …/chunks/0` sends."""
    upload_id = new_upload(server, 1)
    url = f"/api/recordings/uploads/{upload_id}/chunks/0"
    response = server.api("PUT", url, files={"chunk": ("part", audio(4_000))})
    assert response.status_code == 415 and response.json()["error"]["code"] == "unsupported_media_type"
    urlencoded = server.api("PUT", url, data={"chunk": "abc"})  # curl -d
    assert urlencoded.status_code == 415
    assert upload_state(server, upload_id)["received"] == []
    assert stored(server, f"uploads/{upload_id}") == []


def test_the_running_total_of_chunks_is_held_to_the_recording_limit(serve):
    server = serve(MAX_RECORDING_BYTES="100000", MAX_CHUNK_BYTES="40000")
    for extra in ({}, {"total_size": 100_000}):
        upload_id = new_upload(server, 4, **extra)
        assert put_chunk(server, upload_id, 0, audio(40_000)).status_code == 200
        assert put_chunk(server, upload_id, 1, audio(40_000)).status_code == 200
        over = put_chunk(server, upload_id, 2, audio(40_000))
        assert over.status_code == 413, over.text
        assert over.json()["error"] == {**over.json()["error"], "code": "too_large", "limit": 100_000}
        assert upload_state(server, upload_id)["received"] == [0, 1]
        assert stored(server, f"uploads/{upload_id}") == ["chunks/00000", "chunks/00001"]
        # A chunk sent again counts with its new size: 40,000 + 20,000 + 40,000 fits.
        assert put_chunk(server, upload_id, 1, audio(20_000)).status_code == 200
        assert put_chunk(server, upload_id, 2, audio(40_000)).status_code == 200
        assert put_chunk(server, upload_id, 3, b"x").status_code == 413


# -- late bodies --------------------------------------------------------------------------------------------


class InFlight:
    """A request whose body is on its way: the headers and part of the body are sent; finish() sends the
    rest and reads the answer."""

    def __init__(self, server: Server, request: bytes, body: bytes, sent: int):
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        self.sock.sendall(request + body[:sent])
        self.rest = body[sent:]

    def finish(self) -> tuple[int, bytes]:
        with self.sock:
            self.sock.sendall(self.rest)
            answer = b""
            while b"\r\n\r\n" not in answer or not _whole(answer):
                piece = self.sock.recv(65536)
                if not piece:
                    break
                answer += piece
        return int(answer.split(b" ", 2)[1]), answer


def _whole(answer: bytes) -> bool:
    header, _, body = answer.partition(b"\r\n\r\n")
    found = re.search(rb"content-length:\s*(\d+)", header, re.I)
    return found is not None and len(body) >= int(found.group(1))


def chunk_in_flight(server: Server, upload_id: str, index: int, data: bytes) -> InFlight:
    path = f"/api/recordings/uploads/{upload_id}/chunks/{index}"
    request = head(
        server, "PUT", path, len(data), server.telecaller["token"], Content_Type="application/octet-stream"
    )
    return InFlight(server, request, data, len(data) // 2)


def test_a_chunk_that_finishes_after_complete_is_409_and_adds_nothing(server):
    recording = wav(2.0)
    half = len(recording) // 2
    upload_id = new_upload(server, 2, sha256=sha(recording), total_size=len(recording))
    assert put_chunk(server, upload_id, 0, recording[:half]).status_code == 200
    assert put_chunk(server, upload_id, 1, recording[half:]).status_code == 200
    late = chunk_in_flight(server, upload_id, 1, b"L" * 30_000)  # chunk 1 again, other bytes

    # complete does not wait for a body still arriving: every chunk is in, so the upload is handed on.
    complete = server.api("POST", f"/api/recordings/uploads/{upload_id}/complete")
    assert complete.status_code == 202, complete.text
    status, answer = late.finish()

    assert status == 409 and error_code(answer) == "upload_state_conflict", answer[:500]
    final = wait_until(
        lambda: (state := upload_state(server, upload_id))["status"] == "completed" and state,
        what="the upload to complete",
    )
    # The recording is made of the chunks received before complete; the late one left nothing.
    call_log = server.api("GET", f"/api/call-logs/{final['call_log_id']}").json()
    assert (call_log["recording"]["sha256"], call_log["recording"]["size"]) == (
        sha(recording),
        len(recording),
    )
    assert stored(server, f"uploads/{upload_id}") == []


def test_a_chunk_that_finishes_after_delete_is_409_and_stores_nothing(server):
    upload_id = new_upload(server, 2)
    assert put_chunk(server, upload_id, 0, audio(10_000)).status_code == 200
    late = chunk_in_flight(server, upload_id, 1, audio(30_000))

    assert server.api("DELETE", f"/api/recordings/uploads/{upload_id}").status_code == 204
    status, answer = late.finish()

    assert status == 409 and error_code(answer) == "upload_state_conflict", answer[:500]
    state = upload_state(server, upload_id)
    assert (state["status"], state["received"]) == ("cancelled", [])
    assert stored(server, f"uploads/{upload_id}") == []


# -- spools -------------------------------------------------------------------------------------------------


def spool_dirs(server: Server) -> dict[int, Path]:
    root = Path(server.tmp_path) / "edcrm-spool"  # edcrm.spool.ROOT_NAME, in the server's TMPDIR
    found = {}
    for path in root.glob("*-*") if root.exists() else []:
        pid = path.name.rsplit("-", 1)[1]
        if pid.isdigit():
            found[int(pid)] = path
    return found


def test_the_spool_of_a_killed_worker_is_swept_when_the_next_one_starts(serve):
    server = serve()
    upload_id = new_upload(server, 1)
    size = 8 * 1024 * 1024
    path = f"/api/recordings/uploads/{upload_id}/chunks/0"
    request = head(
        server, "PUT", path, size, server.telecaller["token"], Content_Type="application/octet-stream"
    )
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    try:
        sock.sendall(request + b"\x00" * (size // 2))  # half the chunk, spooled as it arrives
        pid, folder = wait_until(
            lambda: next(
                (
                    (pid, path)
                    for pid, path in spool_dirs(server).items()
                    if any(spooled.stat().st_size > 0 for spooled in path.glob("edcrm-upload-*"))
                ),
                None,
            ),
            what="the chunk's spool file",
        )
        os.kill(pid, signal.SIGKILL)  # the worker: gunicorn starts another, which sweeps at start
        wait_until(lambda: not folder.exists(), timeout=60, what="the dead worker's spool to be swept")
    finally:
        sock.close()
    # The new worker serves, and the upload has nothing of the killed one's half chunk.
    assert (
        wait_until(lambda: upload_state(server, upload_id), timeout=60, what="the new worker")["received"]
        == []
    )
    assert list(Path(server.tmp_path).glob("edcrm-upload-*")) == []
