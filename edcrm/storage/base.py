"""The storage interface: named byte streams (keys like `recordings/12/3.m4a`) in a local folder or S3.

Callers stream: `save` reads a file object block by block and `open` returns a readable stream, so no
file is ever held whole in memory, whatever its size. Keys are validated by one function, shared by
every backend, so a key that one backend refuses is refused by all.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Callable, Iterable
from typing import IO, BinaryIO, Protocol

#: Block size of every copy: big enough for throughput, small enough to keep memory flat.
BLOCK_SIZE = 1024 * 1024

#: S3's limit, applied everywhere so that a key valid on one backend is valid on the other.
MAX_KEY_BYTES = 1024


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
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidKey(f"empty, '.' or '..' segment in storage key {key!r}")
    return key


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

    def url_for_download(
        self, key: str, expires: int, *, filename: str | None = None, content_type: str | None = None
    ) -> str | None:
        """A signed URL that lets anyone holding it GET key for `expires` seconds, or None when this
        backend has none (then the app streams the object itself)."""
        validate_key(key)
        return None
