"""A folder on the local file system (`file:///abs/path`): the embedded default, `storage/`."""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO

from .base import (
    BLOCK_SIZE,
    InvalidKey,
    ObjectNotFound,
    Readable,
    Storage,
    StorageUnavailable,
    copy_stream,
    validate_key,
)

#: Prefix and suffix of the temporary files a save writes next to its target.
TEMP_PREFIX, TEMP_SUFFIX = ".", ".tmp"

#: What the folder's file system answers when it cannot be used (full, read-only, not ours, a file where
#: a folder should be), as opposed to a missing key; a client's stream failing is none of these.
UNAVAILABLE_ERRNOS = frozenset(
    {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EROFS,
        errno.EACCES,
        errno.EPERM,
        errno.EIO,
        errno.EEXIST,
        errno.ENOTDIR,
        errno.EMFILE,
        errno.ENFILE,
    }
)


def _reports_outages(method):
    """Raise StorageUnavailable (from the OSError) where the folder cannot be used now."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except OSError as error:
            if error.errno not in UNAVAILABLE_ERRNOS:
                raise
            raise StorageUnavailable(f"the storage folder {self.root} cannot be used: {error}") from error

    return wrapper


class LocalStorage(Storage):
    def __init__(self, root: str | os.PathLike):
        root = Path(root)
        if not root.is_absolute():
            raise ValueError(f"the storage root must be an absolute path, got {str(root)!r}")
        self.root = root

    def __repr__(self) -> str:
        return f"<LocalStorage {self.root}>"

    def _path(self, key: str) -> Path:
        path = self.root.joinpath(*validate_key(key).split("/"))
        # validate_key already keeps the key inside the root; this also catches a symlink in the root
        # that points elsewhere.
        real_root = os.path.realpath(self.root)
        if os.path.commonpath([real_root, os.path.realpath(path)]) != real_root:
            raise InvalidKey(f"storage key {key!r} leads outside the storage root")
        return path

    def _temporary_file(self, path: Path) -> tuple[int, str]:
        """A new temporary file in path's folder (so os.replace is atomic), creating the folder."""
        for _ in range(5):
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                prefix = f"{TEMP_PREFIX}{path.name}."
                return tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=TEMP_SUFFIX)
            except FileNotFoundError:
                continue  # a concurrent delete() removed the folder as it became empty: make it again
        raise OSError(f"could not create a temporary file in {path.parent}")

    @_reports_outages
    def save(self, key: str, fileobj: Readable) -> int:
        path = self._path(key)
        fd, temporary = self._temporary_file(path)
        try:
            with os.fdopen(fd, "wb") as out:
                size = copy_stream(fileobj, out)
                out.flush()
                os.fsync(out.fileno())  # the bytes are on disk before the name points at them
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            self._remove_empty_folders(path.parent)  # a refused save leaves no folder it made
            raise
        return size

    @_reports_outages
    def open(self, key: str) -> BinaryIO:
        path = self._path(key)
        try:
            return open(path, "rb", buffering=BLOCK_SIZE)  # the caller closes it
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key) from None

    @_reports_outages
    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        self._remove_empty_folders(path.parent)  # e.g. a finished upload's chunk folder

    def _remove_empty_folders(self, folder: Path) -> None:
        """Remove folder and its parents up to the root while they are empty. rmdir fails on a folder
        that is not empty, so a concurrent save keeps its folder (and makes it again if need be)."""
        while folder != self.root and self.root in folder.parents:
            try:
                folder.rmdir()
            except OSError:
                break
            folder = folder.parent

    @_reports_outages
    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    @_reports_outages
    def size(self, key: str) -> int:
        try:
            status = self._path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(key) from None
        if not stat.S_ISREG(status.st_mode):
            raise ObjectNotFound(key)
        return status.st_size

    @_reports_outages
    def check(self) -> None:
        """The root exists (created if missing) and a file can be written in it."""
        self.root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=self.root, prefix=TEMP_PREFIX + "healthz.", suffix=TEMP_SUFFIX) as f:
            f.write(b"ok")
