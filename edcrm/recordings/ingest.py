"""The part writer: a request body streamed into the numbered parts of a multipart upload, as it arrives.

An upload built from parts (tus) has a fixed part size P. A body continues the upload where its last
request left it: the bytes past its last whole part (the tail, staged as an object of its own) are read
back once and joined by the body's first bytes into the next part. Each part is spooled to a local file
while it fills; a whole one goes up with `Storage.put_part` in a background thread while the next one
fills (at most MAX_IN_FLIGHT at once, so disk and memory stay bounded), and what is left at the end is
the new tail, staged under a key of its own (`tail_key`).

Nothing here is committed: `receive` returns the parts it put and the tail it staged, and the caller
records them in the database only once the body checked out. Parts that are never recorded are simply
replaced (the same numbers) by the next body, and a staged tail only ever grows a staged tail of the
same part number by bytes appended (the tail of part n is always the first bytes of part n), so a tail
object ahead of the database (a commit that failed) still starts with the bytes the database names:
the tail is always read as its first tail_size bytes.

A body whose stream raises (the client went away, the body timed out: the web layer's exceptions, of
which this module knows nothing) ends early: with no checksum to check, what arrived is kept
(`Received.cut` holds the exception, for the caller to raise once that is recorded); with one, nothing
is, and the exception rises at once.
"""

from __future__ import annotations

import hashlib
import logging
import zlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO

from .. import spool
from ..storage import BLOCK_SIZE, ObjectNotFound, Storage
from ..storage.base import Readable
from .errors import BodyEndedEarly, ChecksumUnsupported, TooLarge, TusChecksumMismatch, UploadExpired

log = logging.getLogger(__name__)

MIB = 1024 * 1024
#: S3's bounds: at most 10,000 parts, each of at least 5 MiB but the last.
MAX_PARTS = 10_000
MIN_PART_BYTES = 5 * MIB
#: Parts being sent at once while the next one fills.
MAX_IN_FLIGHT = 2
#: How often the upload's lease is renewed while a part being sent is waited for (s).
RENEW_WHILE_WAITING_S = 5.0

CHECKSUM_ALGORITHMS = ("sha1", "md5", "sha256", "crc32")


def part_size_for(configured: int, limit: int) -> int:
    """The part size of a new upload: the configured one, at least MIN_PART_BYTES and raised (to whole
    MiB) so that MAX_PARTS parts hold a recording of `limit` bytes."""
    size = max(int(configured), MIN_PART_BYTES)
    if size * MAX_PARTS < limit:
        size = -(-limit // MAX_PARTS)
        size = -(-size // MIB) * MIB
    return size


def tail_key(prefix: str, number: int) -> str:
    """Where the tail of an upload is staged while it is the start of part `number`."""
    return f"{prefix}tail-{number:05d}"


class Checksum:
    """A request's Upload-Checksum, computed as its bytes pass."""

    def __init__(self, algorithm: str):
        if algorithm not in CHECKSUM_ALGORITHMS:
            raise ChecksumUnsupported(
                f"The checksum algorithm {algorithm!r} is not supported: use one of "
                f"{', '.join(CHECKSUM_ALGORITHMS)}."
            )
        self.algorithm = algorithm
        self._crc = 0
        self._hash = None if algorithm == "crc32" else hashlib.new(algorithm)

    def update(self, data: bytes) -> None:
        if self._hash is None:
            self._crc = zlib.crc32(data, self._crc)
        else:
            self._hash.update(data)

    def digest(self) -> bytes:
        if self._hash is None:
            return self._crc.to_bytes(4, "big")
        return self._hash.digest()


@dataclass(frozen=True)
class Part:
    number: int
    size: int
    etag: str


@dataclass
class Received:
    """What one body added: parts put (not committed), the new tail, and how it ended."""

    size: int = 0  # the body's bytes
    parts: list[Part] = field(default_factory=list)
    tail_size: int = 0  # the upload's tail after this body (staged at tail_key when not 0)
    tail_number: int = 1  # the part number the tail starts
    cut: Exception | None = None  # what ended the body early, when it did


@dataclass(frozen=True)
class Target:
    """The multipart upload a body continues, as the database has it."""

    key: str  # the object the parts build
    prefix: str  # the upload's storage folder (its tails go there)
    part_size: int
    parts: int  # parts committed so far: parts 1..parts are whole
    tail_size: int  # bytes staged after them
    multipart: Callable[[], str]  # the multipart id, started on first need (in the caller's thread)

    @property
    def offset(self) -> int:
        return self.parts * self.part_size + self.tail_size


def receive(
    body: Readable,
    storage: Storage,
    target: Target,
    *,
    limit: int,
    ends_at_limit: bool,
    checksum: tuple[str, bytes] | None = None,
    content_length: int | None = None,
    observe: Callable[[int, bytes], None] = lambda offset, data: None,
    renew: Callable[[], None] = lambda: None,
    past_limit: Callable[[], Exception] | None = None,
) -> Received:
    """Stream body into target's parts (see the module's docstring).

    limit is the upload's offset the body may reach (the declared length, or MAX_RECORDING_BYTES): a
    byte past it is TooLarge, and nothing is kept. With ends_at_limit (the length is known), a body
    that reaches it puts its last bytes as the last part instead of staging them. observe sees every
    new byte with its offset in the upload, in order (the whole-file hash, the head, audio counting);
    renew is called per block (the upload's lease); past_limit makes the error of a byte past limit.
    checksum (algorithm, digest) is the body's: on a
    mismatch TusChecksumMismatch, and nothing is kept. content_length, when known: a body that ends
    short of it without its stream raising is cut off too (BodyEndedEarly)."""
    verifier = Checksum(checksum[0]) if checksum is not None else None
    result = Received(tail_number=target.parts + 1)
    with _Parts(storage, target, renew) as parts:
        offset = target.offset
        try:
            while True:
                try:
                    block = body.read(BLOCK_SIZE)
                except Exception as error:  # the client went away or stalled: a web-layer exception
                    if verifier is not None:
                        raise
                    log.info("body of %s cut off at %s: %r", target.key, offset, error)
                    result.cut = error
                    break
                if not block:
                    break
                if offset + len(block) > limit:
                    if past_limit is not None:
                        raise past_limit()
                    raise TooLarge(f"The recording is larger than the limit of {limit} bytes.", limit=limit)
                if verifier is not None:
                    verifier.update(block)
                observe(offset, block)
                offset += len(block)
                result.size += len(block)
                parts.write(block)
                renew()
            if content_length is not None and result.size < content_length and result.cut is None:
                cut = BodyEndedEarly(f"The body ended after {result.size} of its {content_length} bytes.")
                if verifier is not None:
                    raise cut
                result.cut = cut
            if verifier is not None and verifier.digest() != checksum[1]:  # type: ignore[index]
                raise TusChecksumMismatch(
                    f"The body does not match its Upload-Checksum ({verifier.algorithm}): nothing of it "
                    "was kept."
                )
            last = ends_at_limit and offset == limit
            result.parts, result.tail_size, result.tail_number = parts.finish(last=last)
        except BaseException:
            parts.abandon()
            raise
    return result


class _Parts:
    """The parts of one body: the one filling (a spool file) and those being sent."""

    def __init__(self, storage: Storage, target: Target, renew: Callable[[], None]):
        self.storage, self.target, self.renew = storage, target, renew
        self.size = target.part_size
        self.number = target.parts + 1  # the part filling
        self.filled = 0
        self.file: IO[bytes] | None = None
        self._pool = ThreadPoolExecutor(MAX_IN_FLIGHT, thread_name_prefix="edcrm-part")
        self._sending: deque[tuple[Future[str], Part, IO[bytes]]] = deque()
        self._sent: list[Part] = []
        self._multipart_id: str | None = None
        self._joined = not target.tail_size  # the staged tail is read back with the first new byte

    def __enter__(self) -> _Parts:
        self._open()
        return self

    def __exit__(self, *exc_info) -> None:
        self._pool.shutdown(wait=True)
        if self.file is not None:
            self.file.close()
        for _, _, file in self._sending:
            file.close()

    def _open(self) -> None:
        self.file, self.filled = spool.named_file("edcrm-part-"), 0

    def _join_tail(self) -> None:
        """The staged tail becomes the start of the part filling, read back once."""
        assert self.file is not None
        key = tail_key(self.target.prefix, self.number)
        try:
            with self.storage.open_range(key, 0, self.target.tail_size) as staged:
                while block := staged.read(BLOCK_SIZE):
                    self.file.write(block)
                    self.filled += len(block)
        except ObjectNotFound:
            raise UploadExpired("Bytes this upload received are gone: it cannot be resumed.") from None
        if self.filled != self.target.tail_size:
            raise UploadExpired("Bytes this upload received are gone: it cannot be resumed.")
        self._joined = True

    def room(self) -> int:
        return self.size - self.filled

    def write(self, block: bytes) -> None:
        """Append block to the part filling; every part it fills goes up."""
        if not self._joined:
            self._join_tail()
        view = memoryview(block)
        while view:
            assert self.file is not None
            self._guard_count()  # a byte of part MAX_PARTS + 1 could never be stored
            piece = view[: self.room()]
            self.file.write(piece)
            self.filled += len(piece)
            view = view[len(piece) :]
            if self.filled == self.size:
                self._send()
                self._open()

    def _guard_count(self) -> None:
        if self.number > MAX_PARTS:
            limit = MAX_PARTS * self.size
            raise TooLarge(
                f"The recording is larger than {MAX_PARTS} parts of {self.size} bytes ({limit} bytes).",
                limit=limit,
            )

    def _send(self) -> None:
        """The part filling is whole (or the last): it goes up in the background."""
        assert self.file is not None
        self._guard_count()
        if self._multipart_id is None:
            self._multipart_id = self.target.multipart()
        while len(self._sending) >= MAX_IN_FLIGHT:
            self._collect()
        self.file.flush()
        part = Part(self.number, self.filled, "")
        future = self._pool.submit(
            self.storage.put_part,
            self.target.key,
            self._multipart_id,
            part.number,
            self.file.name,
            0,
            part.size,
            part_size=self.size,
        )
        self._sending.append((future, part, self.file))
        self.file = None
        self.number += 1

    def _collect(self) -> None:
        future, part, file = self._sending.popleft()
        try:
            while True:
                try:
                    etag = future.result(timeout=RENEW_WHILE_WAITING_S)
                    break
                except TimeoutError:  # a slow storage: the lease must outlive the wait
                    self.renew()
        finally:
            file.close()
        self._sent.append(Part(part.number, part.size, etag))

    def finish(self, *, last: bool) -> tuple[list[Part], int, int]:
        """Every part sent and the rest staged (or, when last, sent as the last part): the parts, the
        tail's size and the number of the part it starts."""
        assert self.file is not None
        if not self._joined:  # no new byte: the staged tail stays as it is
            return [], self.target.tail_size, self.number
        if self.filled and last:
            self._send()
            self._open()
        while self._sending:
            self._collect()
        tail = self.filled
        if tail:
            self.file.flush()
            self.storage.save_file(tail_key(self.target.prefix, self.number), self.file.name)
        return self._sent, tail, self.number

    def abandon(self) -> None:
        """A body refused: wait for the parts in flight (their errors no longer matter)."""
        while self._sending:
            future, _, file = self._sending.popleft()
            try:
                future.result()
            except Exception:
                pass
            finally:
                file.close()
