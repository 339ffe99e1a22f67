"""A small threaded HTTP proxy on a loopback port that hands requests to its backends in turn, as a load
balancer in front of two hosts would: the test of "one upload, one writer, on any number of hosts" sends
the PATCHes of one tus upload through it to two gunicorns that share nothing local.

Per request (the default): every request gets a backend connection of its own, to the next backend, and
both sides are told `Connection: close`, so a client that keeps its connections alive still reaches the
backends alternately. Per connection (`per_request=False`): each new client connection goes to the next
backend, bytes relayed untouched. A client that goes away mid-body cuts the backend's connection too, as
a real proxy would. `requests` lists (backend index, method, path) in the order they were sent.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
from dataclasses import dataclass, field

HEAD_LIMIT = 64 * 1024
BLOCK = 64 * 1024
#: Headers about the client's connection that must not reach the backend (hop-by-hop).
HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-connection"}


@dataclass
class Forwarded:
    backend: int
    method: str
    path: str


def _read_head(sock: socket.socket) -> tuple[bytes, bytes] | None:
    """(the head up to its blank line, what came after it), or None when the peer closed first."""
    data = b""
    while b"\r\n\r\n" not in data:
        block = sock.recv(BLOCK)
        if not block:
            return None
        data += block
        if len(data) > HEAD_LIMIT:
            raise ValueError("request head too long")
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _closing(head: bytes) -> bytes:
    """head with its hop-by-hop headers replaced by `Connection: close`, and the blank line."""
    lines = head.split(b"\r\n")
    kept = [
        lines[0],
        *(line for line in lines[1:] if line.split(b":", 1)[0].strip().lower() not in HOP_BY_HOP),
    ]
    return b"\r\n".join([*kept, b"Connection: close"]) + b"\r\n\r\n"


def _pump(source: socket.socket, target: socket.socket) -> None:
    """source's bytes to target until source ends (then target's write side is shut) or either fails."""
    try:
        while block := source.recv(BLOCK):
            target.sendall(block)
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)
    except OSError:
        # One side went away mid-transfer: cut the other, as a proxy does.
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@dataclass
class RoundRobinProxy:
    """Listens on 127.0.0.1 (a free port unless given) and spreads what comes over backends (URLs or
    (host, port) pairs), in turn. A context manager: started on enter, stopped on exit."""

    backends: list
    per_request: bool = True
    port: int = 0
    requests: list[Forwarded] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.addresses = [self._address(backend) for backend in self.backends]
        self._next = itertools.cycle(range(len(self.addresses)))
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread: threading.Thread | None = None
        self._stopping = False

    @staticmethod
    def _address(backend) -> tuple[str, int]:
        if isinstance(backend, str):
            host_port = backend.split("://", 1)[-1].split("/", 1)[0]
            host, _, port = host_port.rpartition(":")
            return host, int(port)
        return backend

    def _choose(self) -> int:
        with self._lock:
            return next(self._next)

    def start(self) -> RoundRobinProxy:
        self._thread = threading.Thread(target=self._accept, name="round-robin-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping = True
        with contextlib.suppress(OSError):
            self._listener.close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> RoundRobinProxy:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _accept(self) -> None:
        while not self._stopping:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        backend = None
        try:
            if self.per_request:
                received = _read_head(client)
                if received is None:
                    return
                head, rest = received
                index = self._choose()
                method, path = [*head.split(b"\r\n", 1)[0].decode("latin-1").split(" "), "", ""][:2]
                with self._lock:
                    self.requests.append(Forwarded(index, method, path))
                backend = socket.create_connection(self.addresses[index], timeout=None)
                backend.sendall(_closing(head) + rest)
                upstream = threading.Thread(target=_pump, args=(client, backend), daemon=True)
                upstream.start()
                answered = _read_head(backend)
                if answered is not None:
                    response_head, response_rest = answered
                    client.sendall(_closing(response_head) + response_rest)
                    _pump(backend, client)
            else:
                index = self._choose()
                with self._lock:
                    self.requests.append(Forwarded(index, "", ""))
                backend = socket.create_connection(self.addresses[index], timeout=None)
                upstream = threading.Thread(target=_pump, args=(client, backend), daemon=True)
                upstream.start()
                _pump(backend, client)
        except (OSError, ValueError):
            pass
        finally:
            for sock in (client, backend):
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.close()

    def backends_of(self, method: str) -> list[int]:
        """The backend each request of method went to, in order."""
        with self._lock:
            return [sent.backend for sent in self.requests if sent.method == method]
