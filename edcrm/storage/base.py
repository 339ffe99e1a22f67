"""The storage interface: named byte streams (keys like `recordings/12/3.m4a`) in a local folder or S3.

Callers stream: `save` reads a file object block by block and `open` returns a readable stream, so no
file is ever held whole in memory, whatever its size. Keys are validated by one function, shared by
every backend, so a key that one backend refuses is refused by all.

An object can also be built from numbered parts sent in any order, from any process (a multipart
upload: `start_multipart`, `put_part` / `copy_part`, `complete_multipart`), so that a recording's bytes
are stored once, as they arrive, and finishing it moves none of them. It is read back by ranges
(`open_range`, and `RangedReader`, a seekable file over it for parsers such as mutagen).
"""

from __future__ import annotations

import abc
import io
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import IO, BinaryIO, Protocol

#: Block size of every copy: big enough for throughput, small enough to keep memory flat.
BLOCK_SIZE = 1024 * 1024

#: S3's limit, applied everywhere so that a key valid on one backend is valid on the other.
MAX_KEY_BYTES = 1024

#: S3's limits on a multipart upload, applied by every backend: part numbers 1 to 10,000, every part
#: but the last at least 5 MiB, none above 5 GiB.
MAX_PARTS = 10_000
MIN_PART_SIZE = 5 * 1024 * 1024
MAX_PART_SIZE = 5 * 1024 * 1024 * 1024

#: The first segment of the keys the storage keeps for itself (the local backend's multipart uploads in
#: progress): refused as a key by every backend, so no object can be, or hide, one of them.
RESERVED_SEGMENT = ".multipart"


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class StorageError(Exception):
    """A storage operation failed."""


class StorageUnavailable(StorageError):
    """The storage cannot be used right now (S3 unreachable or failing, a local disk full or not
    writable): the operation did not happen and may succeed later. Every backend raises it, from the
    error of its own transport as cause, so callers and the web answer one exception, not each backend's."""


class InvalidKey(StorageError, ValueError):
    """A key that could escape the storage root, or that no backend can hold."""


class ObjectNotFound(StorageError, FileNotFoundError):
    """No object under this key."""

    def __init__(self, key: str):
        super().__init__(f"no stored object {key!r}")
        self.key = key


class NoSuchMultipart(StorageError, LookupError):
    """No multipart upload in progress with this id for this key (never started, aborted, or completed
    and its object since removed)."""

    def __init__(self, key: str, multipart_id: str):
        super().__init__(f"no multipart upload {multipart_id!r} in progress for {key!r}")
        self.key, self.multipart_id = key, multipart_id


class InvalidPart(StorageError, ValueError):
    """complete_multipart was given parts the storage cannot join: a part never sent or whose ETag is
    not the last one sent, parts out of order or missing, a part sent but left out, or a part but the
    last smaller than the others (or than MIN_PART_SIZE). Nothing was joined; the multipart upload is
    still in progress."""


def validate_key(key: object) -> str:
    """Return key if it is a safe relative key, else raise InvalidKey.

    A key is `/`-separated non-empty segments; no absolute path, no `.` or `..` segment, no
    backslash (a separator on Windows), no NUL or other control character. So a key can name
    nothing outside the storage root, and means the same on a file system and on S3.
    """
    if not isinstance(key, str):
        raise InvalidKey(f"a storage key is a string, not {type(key).__name__}")
    if not key:
        raise InvalidKey("empty storage key")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise InvalidKey(f"storage key longer than {MAX_KEY_BYTES} bytes")
    if key.startswith("/"):
        raise InvalidKey(f"absolute storage key {key!r}")
    if "\\" in key:
        raise InvalidKey(f"backslash in storage key {key!r}")
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in key):
        raise InvalidKey(f"control character in storage key {key!r}")
    segments = key.split("/")
    for segment in segments:
        if segment in ("", ".", ".."):
            raise InvalidKey(f"empty, '.' or '..' segment in storage key {key!r}")
    if segments[0] == RESERVED_SEGMENT:
        raise InvalidKey(f"storage keys under {RESERVED_SEGMENT}/ are the storage's own: {key!r}")
    return key


def validate_part(number: int, length: int, part_size: int) -> None:
    """Raise ValueError unless part `number` of `length` bytes fits a multipart upload of part_size."""
    if not isinstance(number, int) or not 1 <= number <= MAX_PARTS:
        raise ValueError(f"a part number is 1 to {MAX_PARTS}, not {number!r}")
    if not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
        raise ValueError(f"a part size is {MIN_PART_SIZE} to {MAX_PART_SIZE} bytes, not {part_size}")
    if not 0 <= length <= part_size:
        raise ValueError(f"a part holds at most {part_size} bytes, not {length}")


def validate_parts(parts: list[tuple[int, str]]) -> None:
    """Raise InvalidPart unless parts are parts 1 to n, in order: what every backend joins (S3 would
    join gaps; the local backend, whose parts sit at their place in one file, cannot)."""
    if not parts:
        raise InvalidPart("a multipart upload is completed with one part at least")
    for index, (number, _etag) in enumerate(parts):
        if number != index + 1:
            raise InvalidPart(
                f"the parts joined are 1 to {len(parts)} in order: part {index + 1} is {number}"
            )


def validate_range(start: int, stop: int | None) -> None:
    """Raise ValueError unless [start, stop) is a range of byte positions (stop None: to the end)."""
    if start < 0 or (stop is not None and stop < start):
        raise ValueError(f"not a byte range: [{start}, {stop})")


def copy_stream(source: Readable, target, block_size: int = BLOCK_SIZE) -> int:
    """Copy source to target block by block; return the number of bytes copied."""
    size = 0
    while block := source.read(block_size):
        target.write(block)
        size += len(block)
    return size


class Storage(abc.ABC):
    """Where files live. Every method validates its key first (InvalidKey)."""

    @abc.abstractmethod
    def save(self, key: str, fileobj: Readable) -> int:
        """Stream fileobj (anything with read(n)) into key, replacing any object there; return its size.

        Atomic: readers see the old object or the whole new one, never a part, and a failed save
        leaves nothing behind.
        """

    def save_file(self, key: str, path: str | os.PathLike) -> int:
        """Store the local file at path under key, like save; return its size. Backends that can read a
        file part by part straight from disk (S3: one part per request, no part held in memory)
        override it."""
        with open(path, "rb") as file:
            return self.save(key, file)

    def assemble(
        self, key: str, blocks: Iterable[bytes], spool: IO[bytes], verify: Callable[[], None] = lambda: None
    ) -> int:
        """Store the concatenation of blocks under key; return its size. Memory stays bounded: the
        blocks are written to spool (a named local file the caller keeps, e.g. to read the audio's
        duration) and stored from there. verify runs once every block is spooled and before the object
        appears: if it raises, nothing is stored. This default stores the whole spool at the end; S3
        sends its parts while the spool is still growing."""
        for block in blocks:
            spool.write(block)
        spool.flush()
        verify()
        return self.save_file(key, spool.name)

    @abc.abstractmethod
    def open(self, key: str) -> BinaryIO:
        """A binary readable stream of key's bytes (close it when done); ObjectNotFound if missing."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove key; nothing happens if it does not exist."""

    def delete_many(self, keys: Iterable[str]) -> None:
        """Remove every key of keys (the missing ones are no error). Backends that can remove many in
        one request do (S3: a recording's hundreds of chunks in one round trip instead of hundreds)."""
        for key in keys:
            self.delete(key)

    @abc.abstractmethod
    def exists(self, key: str) -> bool:
        """Is there an object under key?"""

    @abc.abstractmethod
    def size(self, key: str) -> int:
        """The object's size in bytes; ObjectNotFound if missing."""

    @abc.abstractmethod
    def check(self) -> None:
        """Raise if the storage cannot be used now (for /healthz)."""

    # -- objects built from parts: a multipart upload --------------------------------------------------

    @abc.abstractmethod
    def start_multipart(self, key: str, *, part_size: int, content_type: str | None = None) -> str:
        """Begin building key from numbered parts of part_size bytes (all but the last); return the
        multipart upload's id, opaque, to pass to the calls below from any process. Nothing is visible
        under key until complete_multipart. content_type is stored with the object where the backend
        keeps one (S3)."""

    @abc.abstractmethod
    def put_part(
        self,
        key: str,
        multipart_id: str,
        number: int,
        path: str | os.PathLike,
        offset: int,
        length: int,
        *,
        part_size: int,
    ) -> str:
        """Make `length` bytes of the local file at path, from offset, part `number` (1-based) of the
        multipart upload; return the part's ETag, for complete_multipart. Sending a part again replaces
        it. The bytes stream from disk: no part is held in memory. NoSuchMultipart if the upload is not
        in progress; ValueError for a part that does not fit (validate_part) or a file too short."""

    @abc.abstractmethod
    def copy_part(
        self,
        key: str,
        multipart_id: str,
        number: int,
        source_key: str,
        *,
        part_size: int,
        start: int = 0,
        stop: int | None = None,
    ) -> str:
        """Make bytes [start, stop) of the stored object source_key (stop None: to its end) part
        `number` of the multipart upload, inside the storage (S3: UploadPartCopy, no byte comes to this
        process); return the part's ETag. ObjectNotFound if source_key is missing; ValueError for an
        empty range or one past the object's end."""

    @abc.abstractmethod
    def complete_multipart(self, key: str, multipart_id: str, parts: list[tuple[int, str]]) -> int:
        """Join parts, (number, ETag) in ascending order from 1, into the object under key (replacing
        any object there, atomically); return its size. Every part sent is joined: Ceph RGW refuses to
        leave out a part that was sent (AWS S3 would), and so does the local backend, so a part sent
        past the last one joined (by a request that was then refused) fails here on every backend but
        moto; send such part numbers again, or abort. Idempotent: when the upload was completed
        already and its object is there, return the object's size. InvalidPart for parts that cannot be
        joined; NoSuchMultipart if the upload is neither in progress nor completed."""

    @abc.abstractmethod
    def abort_multipart(self, key: str, multipart_id: str) -> None:
        """Drop the multipart upload and every part sent; nothing happens if it is finished or missing."""

    @abc.abstractmethod
    def open_range(self, key: str, start: int, stop: int | None = None) -> BinaryIO:
        """A binary readable stream of bytes [start, stop) of key (stop None: to its end; a range past
        the end is cut at the end, so it may be shorter or empty); ObjectNotFound if missing. Close it."""

    @abc.abstractmethod
    def copy(self, source_key: str, key: str) -> None:
        """Make key a copy of source_key inside the storage (replacing any object there, atomically);
        ObjectNotFound if source_key is missing."""

    def url_for_download(
        self, key: str, expires: int, *, filename: str | None = None, content_type: str | None = None
    ) -> str | None:
        """A signed URL that lets anyone holding it GET key for `expires` seconds, or None when this
        backend has none (then the app streams the object itself)."""
        validate_key(key)
        return None


class RangedReader(io.RawIOBase, BinaryIO):  # BinaryIO: typed as the file it is, for its callers
    """The object under key, `size` bytes long, as a read-only seekable binary file that reads it by
    ranges: for parsers that read a little here and there (mutagen reads a header, seeks to the end for
    a tag, reads the index) without the object coming whole to local disk or memory.

    It reads whole blocks of block_size and keeps the last few (CACHED_BLOCKS), so a parser's many small
    reads cost few requests, and memory stays at a few blocks whatever the object's size."""

    #: Blocks kept: a parser going back and forth between the start and the end of the file finds both.
    CACHED_BLOCKS = 4

    def __init__(self, storage: Storage, key: str, size: int, block_size: int = 256 * 1024):
        super().__init__()
        if size < 0 or block_size < 1:
            raise ValueError(f"a size of {size} bytes in blocks of {block_size}")
        self.storage, self.key, self.size, self.block_size = storage, validate_key(key), size, block_size
        self._position = 0
        self._blocks: OrderedDict[int, bytes] = OrderedDict()
        #: Ranged reads made so far (one per block fetched).
        self.requests = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        self._checkClosed()
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self._checkClosed()
        if whence == os.SEEK_SET:
            position = offset
        elif whence == os.SEEK_CUR:
            position = self._position + offset
        elif whence == os.SEEK_END:
            position = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence!r}")
        if position < 0:
            raise OSError(f"seek to {position}, before the start of the file")
        self._position = position  # past the end is allowed, as for a file: reads there are empty
        return position

    def readinto(self, buffer) -> int:
        self._checkClosed()
        view = memoryview(buffer).cast("B")
        wanted = min(len(view), max(0, self.size - self._position))
        done = 0
        while done < wanted:
            index, skip = divmod(self._position, self.block_size)
            block = self._block(index)
            piece = block[skip : skip + wanted - done]
            if not piece:  # the object is shorter than the size we were told
                break
            view[done : done + len(piece)] = piece
            done += len(piece)
            self._position += len(piece)
        return done

    def _block(self, index: int) -> bytes:
        block = self._blocks.get(index)
        if block is not None:
            self._blocks.move_to_end(index)
            return block
        start = index * self.block_size
        stop = min(self.size, start + self.block_size)
        with self.storage.open_range(self.key, start, stop) as stream:
            pieces = []
            left = stop - start
            while left > 0 and (piece := stream.read(left)):
                pieces.append(piece)
                left -= len(piece)
        self.requests += 1
        block = b"".join(pieces)
        self._blocks[index] = block
        while len(self._blocks) > self.CACHED_BLOCKS:
            self._blocks.popitem(last=False)
        return block

    def close(self) -> None:
        self._blocks.clear()
        super().close()
