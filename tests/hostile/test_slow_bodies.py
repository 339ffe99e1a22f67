"""Slow clients against the real gunicorn: stalled bodies and slow headers (slowloris) never take the
server down, a stalled body is cut off after BODY_TIMEOUT_S with nothing kept, and a body that trickles
in slowly but steadily still arrives."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator

import pytest
import requests

from tests.support.server import Server, start_server

#: Connections an attacker holds open at once.
ATTACKERS = 50


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


@contextlib.contextmanager
def stalled(port: int, request: bytes, count: int = ATTACKERS) -> Iterator[list[socket.socket]]:
    """count connections that each send `request` (a head, perhaps part of a body) and then stall."""
    sockets = []
    try:
        for _ in range(count):
            sock = connect(port)
            sockets.append(sock)
            sock.sendall(request)
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def healthz_delays(base: str, polls: int = 12) -> list[float]:
    """How long each of `polls` /healthz requests (a new connection each) took to answer 200."""
    delays = []
    for _ in range(polls):
        started = time.monotonic()
        try:
            answer = requests.get(f"{base}/healthz", timeout=2)
            ok = answer.status_code == 200
        except requests.RequestException:
            ok = False
        delays.append(time.monotonic() - started if ok else float("inf"))
        time.sleep(0.1)  # a poll every ~0.1 s while the attackers hold their connections
    return delays


def read_answer(sock: socket.socket, timeout: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection (within timeout), and when it closed."""
    started = time.monotonic()
    sock.settimeout(timeout)
    answer = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            answer += chunk
    return answer, time.monotonic() - started


def read_response(sock: socket.socket, timeout: float = 15) -> bytes:
    """One whole response (framed by its Content-Length) on a connection that stays open."""
    sock.settimeout(timeout)
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
        head, sep, body = answer.partition(b"\r\n\r\n")
        lengths = [line for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:")]
        if sep and len(body) >= int(lengths[0].split(b":")[1]):
            break
    return answer


def status_and_body(answer: bytes) -> tuple[int, dict | None]:
    if not answer.startswith(b"HTTP/"):
        return 0, None
    head, _, body = answer.partition(b"\r\n\r\n")
    try:
        return int(head.split(b" ", 2)[1]), json.loads(body)
    except ValueError:
        return int(head.split(b" ", 2)[1]), None


def stalled_json_post(length: int = 1000) -> bytes:
    """A sign-in whose body announces `length` bytes and sends one (the app reads JSON bodies whole)."""
    return (
        b"POST /api/auth/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n{" % length
    )


def chunk_head(server, upload_id: str, index: int, length: int) -> bytes:
    return (
        f"PUT /api/recordings/uploads/{upload_id}/chunks/{index} HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {server.telecaller['token']}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def one_shot_head(server, call_log_id: int, length: int) -> bytes:
    """A one-shot recording's request head and the head of its file part."""
    part = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
    return (
        f"POST /api/call-logs/{call_log_id}/recording HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {server.telecaller['token']}\r\n"
        f"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {length}\r\n\r\n"
    ).encode() + part


def new_upload(server, chunks: int = 2) -> str:
    # The server's own call log: none of these uploads ever completes.
    body = {"call_log_id": server.call_log_id, "filename": "call.wav", "expected_chunks": chunks}
    answer = server.api("POST", "/api/recordings/uploads", json=body)
    assert answer.status_code == 201, answer.text
    return answer.json()["upload_id"]


def received(server, upload_id: str) -> list[int]:
    answer = server.api("GET", f"/api/recordings/uploads/{upload_id}")
    assert answer.status_code == 200, answer.text
    return answer.json()["received"]


@pytest.mark.parametrize("body", ["short", "upload"])
def test_healthz_answers_within_a_second_while_50_bodies_stall(server, body):
    if body == "short":  # the event loop holds them: no thread is taken
        request = stalled_json_post()
    else:  # chunks of 1 MB whose first 100 KB came: threads stream them, as many as the reserve leaves
        request = chunk_head(server, new_upload(server), 0, 1_000_000) + b"U" * 100_000
    with stalled(server.port, request):
        delays = healthz_delays(server.base)
    assert max(delays) < 1, f"/healthz took {max(delays):.2f}s with {ATTACKERS} stalled bodies: {delays}"


def test_healthz_answers_within_a_second_while_50_heads_trickle(server):
    head = b"GET /api/leads HTTP/1.1\r\nHost: x\r\n"
    with stalled(server.port, head) as sockets:
        delays = healthz_delays(server.base, polls=6)
        for sock in sockets:  # slowloris: a header line now and then keeps each connection busy
            sock.sendall(b"X-Slow: 1\r\n")
        delays += healthz_delays(server.base, polls=6)
    assert max(delays) < 1, f"/healthz took {max(delays):.2f}s with {ATTACKERS} trickling heads: {delays}"


def test_healthz_answers_within_a_second_while_50_clients_never_close(server):
    # Each is answered with "Connection: close", and neither reads it nor closes its side.
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with stalled(server.port, request):
        delays = healthz_delays(server.base)
    assert max(delays) < 1, f"/healthz took {max(delays):.2f}s with {ATTACKERS} clients not closing: {delays}"


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> Iterator[Server]:
    """A server that cuts a body off after 2 s without a byte, with 4 threads: 2 for uploads, 2 kept for
    the rest (shared: starting one takes seconds)."""
    yield from start_server(tmp_path_factory.mktemp("quick"), BODY_TIMEOUT_S="2", WEB_THREADS="4")


def test_stalled_bodies_are_cut_off_and_nothing_is_kept(quick):
    upload_id = new_upload(quick)
    call_log_id = quick.new_call_log()
    # A small body stalls before the app sees it; a large one while the app streams it to a spool file,
    # or while werkzeug parses a form.
    with connect(quick.port) as small, connect(quick.port) as large, connect(quick.port) as form:
        small.sendall(chunk_head(quick, upload_id, 0, 1000) + b"R")
        large.sendall(chunk_head(quick, upload_id, 1, 1_000_000) + b"R" * 200_000)
        form.sendall(one_shot_head(quick, call_log_id, 1_000_000) + b"R" * 200_000)
        for sock in (small, large, form):
            answer, after = read_answer(sock, timeout=10)
            status, body = status_and_body(answer)
            assert status == 408, answer[:300]
            assert body["error"]["code"] == "body_timeout"
            assert after < 6, f"cut off after {after:.1f}s with BODY_TIMEOUT_S=2"
    assert received(quick, upload_id) == []
    assert quick.api("GET", f"/api/call-logs/{call_log_id}").json().get("recording") is None

    # A head that never ends is cut off too.
    with connect(quick.port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        answer, after = read_answer(sock, timeout=10)
    assert after < 6, f"an unfinished head was kept for {after:.1f}s"
    assert status_and_body(answer)[0] in (0, 408)

    # The server is still fine, and the chunk can be sent again.
    answer = quick.api(
        "PUT",
        f"/api/recordings/uploads/{upload_id}/chunks/0",
        data=b"R" * 1000,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["received"] == [0]


def test_a_slow_but_steady_body_arrives(quick):
    upload_id = new_upload(quick, chunks=1)
    piece = b"S" * 8192
    pieces = 11  # 88 KiB in 5 s: longer than BODY_TIMEOUT_S in all, never 2 s without a byte
    with connect(quick.port) as sock:
        sock.sendall(chunk_head(quick, upload_id, 0, len(piece) * pieces))
        for _ in range(pieces):
            time.sleep(0.5)  # the client's pace, not a wait for the server
            sock.sendall(piece)
        answer = read_response(sock)
    status, body = status_and_body(answer)
    assert status == 200, answer[:300]
    assert body["received"] == [0]
    assert received(quick, upload_id) == [0]


def test_uploads_beyond_the_threads_for_them_wait_then_hear_503(quick):
    upload_id = new_upload(quick, chunks=3)
    with connect(quick.port) as first, connect(quick.port) as second, connect(quick.port) as third:
        for index, sock in enumerate((first, second, third)):
            sock.sendall(chunk_head(quick, upload_id, index, 1_000_000) + b"T" * 100_000)
        third.settimeout(0.5)
        answer = b""
        deadline = time.monotonic() + 10
        while not answer and time.monotonic() < deadline:
            for sock in (first, second):  # alive, slowly: they keep both threads for uploads
                sock.sendall(b"T")
            with contextlib.suppress(TimeoutError):
                answer = third.recv(65536)
            delays = healthz_delays(quick.base, polls=1)
            assert delays[0] < 1, "/healthz waited behind the uploads"
    status, body = status_and_body(answer)
    assert status == 503, answer[:300]
    assert body["error"]["code"] == "server_busy"
    assert 2 not in received(quick, upload_id)
