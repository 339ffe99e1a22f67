"""gunicorn's gthread worker, whose event loop reads each request's head and the start of its body before
a thread takes it, so that slow clients cannot take every thread.

Stock gthread hands a connection to a thread as soon as its first byte arrives, and the thread blocks on
the socket until the whole head and body are in: eight clients that send a head and one byte of body
(or half a head, slowloris) hold all eight threads, and /healthz waits for as long as they stay. Here:

- The loop reads without blocking until the head is complete and the body is either complete or has
  PREBUFFER_BYTES in. Requests without a body, JSON, forms and sign-ins never reach a thread before
  all their bytes are in, so a client stalling there costs a file descriptor and a buffer, not a thread.
  A head must be whole within BODY_TIMEOUT_S of its first byte (which must come within `keepalive`
  seconds, as a kept-alive connection's next request must); a body may go at most BODY_TIMEOUT_S without
  a byte. Past that the loop answers 408 itself and closes the connection.
- A larger body (an upload) streams to the app from a thread, with a read timeout of BODY_TIMEOUT_S on
  the socket (each read waits that long for a byte at most: a phone that trickles still gets through; a
  dead one is cut off and the app sees BodyTimeout from the stream, see edcrm.bodytimeout). Such
  requests may hold at most `threads` minus a reserve (a quarter, at least 2) at once: the reserve is
  for everything else, /healthz included, whatever the uploads do. An upload that finds every slot taken
  waits unread (TCP holds the client back) for a slot, or is answered 503 after BODY_TIMEOUT_S.

- A connection closed after its answer lingers in the poller to read what the client still sends (see
  Conn.close); gthread waits for that in the loop itself, 2 s for each client that does not close.

What the loop holds is bounded by `worker_connections` (1000) connections a process, each with at most
about 130 KB of buffers; more clients than that wait in the listen backlog, which only a proxy or
more processes widen.

No minimum rate is enforced on bodies: the reserve keeps the server answering whatever the uploads do,
and any rate low enough for a phone on a bad network (a 16 MiB chunk at a few KB/s) would cost an
attacker who trickles at that rate as little as it costs the phone.

TLS and HTTP/2 prior knowledge need the socket before any byte is read: with either configured, the
worker behaves as stock gthread (plus the read timeout).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import selectors
import socket
import time
from collections import deque
from functools import partial

from gunicorn import util
from gunicorn.workers import gthread

from .config import body_timeout_s

#: Body bytes the loop reads before a thread takes the request (every body up to this size is read whole).
PREBUFFER_BYTES = 64 * 1024
#: A head longer than this goes to gunicorn's parser in a thread unfinished (as an upload does), which
#: reads the rest or refuses it (431, 400).
MAX_HEAD_BYTES = 32 * 1024
RECV_BYTES = 16 * 1024
#: A connection closed after its answer reads what the client still sends for this long, or this much.
LINGER_S, LINGER_BYTES = 2.0, 64 * 1024
#: How long the worker stops accepting when the process is out of file descriptors.
ACCEPT_PAUSE_S = 0.5


class Conn(gthread.TConn):
    """A client connection, with what the loop read for its next request and the socket's read timeout."""

    def __init__(self, cfg, sock, client, server, read_timeout: float, linger=None):
        super().__init__(cfg, sock, client, server)
        self.read_timeout = read_timeout
        self.linger = linger
        self.ready = False  # read by the loop, to be handed to a thread
        self.streams = False  # its body is still to be read from the socket (it holds an upload slot)
        self.buffered = b""  # what the loop read, for gunicorn's parser
        self.data_ready = True  # gthread must not wait for data itself (see ThreadWorker.handle)

    def init(self):
        """Run by the thread before each request, after it set the socket blocking again."""
        super().init()
        self.sock.settimeout(self.read_timeout)

    def close(self, graceful=False):
        """gthread closes gracefully (a FIN, then what the client still sends is read, so that the end of
        the answer is not lost to a reset) by waiting up to 2 s for the client in the event loop itself:
        clients that never close would stop it for 2 s each. The worker lingers without blocking."""
        if graceful and self.linger is not None:
            self.linger(self)
        else:
            super().close()


class Request:
    """What the loop knows of the request being read on a connection."""

    def __init__(self, data: bytes, deadline: float):
        self.data = bytearray(data)
        self.deadline = deadline  # of the head at first; of the next body byte once the head is in
        self.head_end: int | None = None  # where the body starts
        self.searched = 0  # the head's end is not before this
        self.length: int | None = None  # of the body, with Content-Length
        self.chunks: ChunkedScan | None = None
        self.continues = False  # Expect: 100-continue (the client sends nothing before it is answered)

    def examine(self) -> str | None:
        """ "complete" (every byte is in), "streams" (a thread must read the rest), or None (read on)."""
        if self.head_end is None:
            if not self._find_head():
                return "streams" if len(self.data) > MAX_HEAD_BYTES else None
            if self.head_end is None:  # framing this loop cannot tell: gunicorn's parser decides
                return "streams"
        body = len(self.data) - self.head_end
        done: bool | None
        if self.length is not None:
            done = body >= self.length
        elif self.chunks is not None:
            done = self.chunks.scan(self.data, self.head_end)
            if done is None:  # broken framing: gunicorn's parser answers it
                return "streams"
        else:
            done = True
        if done:
            return "complete"
        if self.continues or body >= PREBUFFER_BYTES:
            return "streams"
        return None

    def _find_head(self) -> bool:
        data = self.data
        start = 0
        while data.startswith(b"\r\n", start):  # empty lines before a request line are ignored
            start += 2
        end = data.find(b"\r\n\r\n", max(start, self.searched))
        if end < 0:
            if data.find(b"\n\n", start) >= 0:  # bare LF: not ours to judge
                self.head_end = None
                return True
            self.searched = max(start, len(data) - 3)
            return False
        self.head_end = end + 4
        lengths, codings, expect = [], [], b""
        for line in bytes(data[start:end]).split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip()
            if name == b"content-length":
                lengths.append(value)
            elif name == b"transfer-encoding":
                codings.append(value.lower())
            elif name == b"expect":
                expect = value.lower()
        self.continues = expect == b"100-continue"
        if codings:
            if lengths or not b",".join(codings).rstrip().endswith(b"chunked"):
                self.head_end = None  # ambiguous
            else:
                self.chunks = ChunkedScan()
        elif lengths:
            if len(set(lengths)) != 1 or not lengths[0].isdigit() or len(lengths[0]) > 18:
                self.head_end = None
            else:
                self.length = int(lengths[0])
        return True


class ChunkedScan:
    """Follows a chunked body as it arrives, to tell when it is whole (through its trailer section)."""

    HEX = frozenset(b"0123456789abcdefABCDEF")

    def __init__(self):
        self.offset: int | None = None  # where the next chunk-size line (or trailer line) starts
        self.trailers = False

    def scan(self, data: bytearray, start: int) -> bool | None:
        """True when whole, False when more is to come, None when the framing is broken."""
        pos = start if self.offset is None else self.offset
        while True:
            eol = data.find(b"\r\n", pos)
            if eol < 0:
                self.offset = pos
                return None if len(data) - pos > 8192 else False
            if self.trailers:
                if eol == pos:
                    return True
                pos = eol + 2
                continue
            size_line = bytes(data[pos:eol]).split(b";", 1)[0].rstrip(b" \t")
            if not size_line or len(size_line) > 16 or not self.HEX.issuperset(size_line):
                return None
            size = int(size_line, 16)
            if size == 0:
                self.trailers = True
                pos = eol + 2
                continue
            following = eol + 2 + size + 2
            if following > len(data):
                self.offset = pos  # this chunk is not all in yet: look at its size line again
                return False
            pos = following


def answer(status: str, code: str, message: str, extra: str = "") -> bytes:
    """A whole HTTP response the loop sends itself, the error in the API's shape."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"Connection: close\r\n{extra}\r\n"
    ).encode() + body


class ThreadWorker(gthread.ThreadWorker):
    """gthread, with heads and short bodies read by the event loop (see the module's docstring)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.body_timeout = body_timeout_s(os.environ)
        self.reading: dict[Conn, Request] = {}  # in the order they started
        self.waiting: deque[tuple[Conn, float]] = deque()  # for an upload slot, until the deadline
        reserve = max(2, self.cfg.threads // 4)
        self.upload_slots = max(1, self.cfg.threads - reserve)
        self.uploads = 0
        self.lingering: dict[socket.socket, list] = {}  # socket -> [deadline, bytes read]
        self.passthrough = self.cfg.is_ssl or self.cfg.http2_cleartext != "off"
        self.accept_paused_until = 0.0
        self.idle_timeout = min(self.cfg.keepalive or self.body_timeout, self.body_timeout)

    # -- the loop -----------------------------------------------------------------------------------------

    def accept(self, listener):
        try:
            client_sock, client_addr = listener.accept()
        except OSError as e:
            if e.errno in (errno.EMFILE, errno.ENFILE):
                # Out of file descriptors (gthread would die of it): pause accepting for a moment, the
                # clients wait in the listen backlog meanwhile.
                self.accept_paused_until = time.monotonic() + ACCEPT_PAUSE_S
                self.set_accept_enabled(False)
            elif e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        server = listener.getsockname()
        if self.passthrough:
            conn = Conn(self.cfg, client_sock, client_addr, server, self.body_timeout)
            conn.data_ready = False  # gthread's own wait for the first byte
        else:
            conn = Conn(self.cfg, client_sock, client_addr, server, self.body_timeout, self.linger)
        self.enqueue_req(conn)

    def set_accept_enabled(self, enabled):
        """The loop enables accepting again on each turn where it has room for connections."""
        if not enabled or time.monotonic() >= self.accept_paused_until:
            super().set_accept_enabled(enabled)

    def enqueue_req(self, conn):
        """Every way to a thread passes here (new, kept-alive and pipelining connections): a request is
        first read by the loop."""
        if conn.ready or self.passthrough:
            conn.ready = False
            super().enqueue_req(conn)
            return
        leftover = conn.parser.unreader.take_buffered() if conn.parser is not None else b""
        conn.sock.setblocking(False)
        # A connection waits for its first byte as long as a kept-alive one waits for its next request.
        request = Request(leftover, time.monotonic() + (self.body_timeout if leftover else self.idle_timeout))
        self.reading[conn] = request
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_request_bytes, conn))
        if leftover:
            self.examine(conn, request)
        else:  # a kept-alive connection is readable already, a new one often: spare a turn of the loop
            self.on_request_bytes(conn, conn.sock)

    def on_request_bytes(self, conn, _sock):
        request = self.reading.get(conn)
        if request is None:  # dropped since the poller saw it readable
            return
        try:
            data = conn.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.drop(conn)
            return
        if not data:  # the client went away (or shut its side): gunicorn and the app tell the rest
            if request.data:
                self.hand_over(conn, request, streams=False)
            else:
                self.drop(conn)
            return
        if request.head_end is not None or not request.data:  # a body's next byte, or a head's first
            request.deadline = time.monotonic() + self.body_timeout
        request.data += data
        self.examine(conn, request)

    def examine(self, conn, request: Request) -> None:
        had_head = request.head_end is not None
        state = request.examine()
        if state is None:
            if not had_head and request.head_end is not None:  # the body's clock starts
                request.deadline = time.monotonic() + self.body_timeout
            return
        self.hand_over(conn, request, streams=state == "streams")

    def hand_over(self, conn, request: Request, *, streams: bool) -> None:
        self.stop_reading(conn)
        conn.buffered = bytes(request.data)
        conn.ready = True
        conn.streams = streams
        if streams and self.uploads >= self.upload_slots:
            self.waiting.append((conn, time.monotonic() + self.body_timeout))
            return
        if streams:
            self.uploads += 1
        self.enqueue_req(conn)

    def stop_reading(self, conn) -> None:
        if self.reading.pop(conn, None) is not None:
            self.poller.unregister(conn.sock)

    def finish_request(self, conn, fs):
        if conn.streams:
            conn.streams = False
            self.uploads -= 1
            while self.waiting and self.uploads < self.upload_slots:
                waiting, _ = self.waiting.popleft()
                self.uploads += 1
                self.enqueue_req(waiting)
        super().finish_request(conn, fs)

    def murder_pending(self):
        """Every turn of the loop (about once a second): cut off the clients past their deadline."""
        super().murder_pending()
        now = time.monotonic()
        for conn, request in list(self.reading.items()):
            if not request.data and not self.alive:  # stopping: nothing was started on it
                self.drop(conn)
            elif request.deadline <= now:
                self.cut_off(conn, request)
        for sock, (deadline, _) in list(self.lingering.items()):
            if deadline <= now:
                self.stop_lingering(sock)
        while self.waiting and self.waiting[0][1] <= now:
            conn, _ = self.waiting.popleft()
            message = "The server is busy with other uploads. Try again shortly."
            self.drop(conn, answer("503 Service Unavailable", "server_busy", message, "Retry-After: 5\r\n"))

    def cut_off(self, conn, request: Request) -> None:
        seconds = f"{self.body_timeout:g}"
        if not request.data:
            self.drop(conn)  # a connection that never sent a request: nothing to answer
        elif request.head_end is None:
            message = f"The request's head did not arrive within {seconds} seconds."
            self.drop(conn, answer("408 Request Timeout", "request_timeout", message))
        else:
            self.log.warning("Request body from %s stalled for %ss: cut off", conn.client, seconds)
            message = f"The request body stopped arriving: no byte came for {seconds} seconds. Send it again."
            self.drop(conn, answer("408 Request Timeout", "body_timeout", message))

    def drop(self, conn, response: bytes = b"") -> None:
        """Close a connection the loop holds, after a short answer when there is one (best effort: the
        socket is non-blocking and the answer fits in its buffer)."""
        self.stop_reading(conn)
        try:
            if response:
                conn.sock.send(response)
                conn.sock.shutdown(socket.SHUT_WR)
                conn.sock.recv(65536)  # what is waiting unread would make close() reset the connection
        except OSError:
            pass
        self.nr_conns -= 1
        conn.close()

    def linger(self, conn) -> None:
        """Close conn after its answer, reading what the client still sends (see Conn.close)."""
        sock = conn.sock
        try:
            sock.shutdown(socket.SHUT_WR)
            sock.setblocking(False)
            self.poller.register(sock, selectors.EVENT_READ, self.on_linger_bytes)
        except (OSError, ValueError, KeyError):
            util.close(sock)
            return
        self.lingering[sock] = [time.monotonic() + LINGER_S, 0]

    def on_linger_bytes(self, sock) -> None:
        try:
            data = sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        state = self.lingering.get(sock)
        if state is None:
            return
        state[1] += len(data)
        if not data or state[1] >= LINGER_BYTES:
            self.stop_lingering(sock)

    def stop_lingering(self, sock) -> None:
        del self.lingering[sock]
        with contextlib.suppress(OSError, ValueError, KeyError):
            self.poller.unregister(sock)
        util.close(sock)

    # -- the threads --------------------------------------------------------------------------------------

    def handle(self, conn):
        """Give gunicorn's parser what the loop read, then serve the request as gthread does."""
        if conn.buffered:
            conn.sock.setblocking(True)
            conn.init()
            conn.parser.unreader.unread(conn.buffered)
            conn.buffered = b""
        return super().handle(conn)
