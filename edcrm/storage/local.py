"""A folder on the local file system (`file:///abs/path`): the embedded default, `storage/`.

A multipart upload is one sparse file, `ROOT/.multipart/ID/data`, each part written in place at
(number - 1) x part_size (pwrite), so parts may come in any order, from any process of the host (web
processes share the folder), and be sent again; completing it truncates the file to the parts joined
and renames it into place: no byte is copied. Beside the data, `meta.json` holds the key and part size,
and `parts/NUMBER` each part's ETag and size, written once its bytes are on disk. A part being written
holds a shared lock (flock) on the data file and complete and abort an exclusive one, so a part can
never land in a completed object or a removed upload.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol, cast

from .base import (
    BLOCK_SIZE,
    RESERVED_SEGMENT,
    InvalidKey,
    InvalidPart,
    NoSuchMultipart,
    ObjectNotFound,
    Readable,
    Storage,
    StorageUnavailable,
    copy_stream,
    validate_key,
    validate_part,
    validate_parts,
    validate_range,
)

#: Prefix and suffix of the temporary files a save writes next to its target.
TEMP_PREFIX, TEMP_SUFFIX = ".", ".tmp"


class _ReadsInto(Protocol):
    def readinto(self, buffer: memoryview, /) -> int | None: ...


#: A multipart id: 32 hex digits (anything else names no upload, and no path).
MULTIPART_ID = re.compile(r"[0-9a-f]{32}")

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

    # -- multipart uploads: one sparse file per upload ---------------------------------------------------

    def _multipart_folder(self, key: str, multipart_id: str) -> Path:
        validate_key(key)
        if not isinstance(multipart_id, str) or not MULTIPART_ID.fullmatch(multipart_id):
            raise NoSuchMultipart(key, str(multipart_id))
        return self.root / RESERVED_SEGMENT / multipart_id

    def _meta(self, key: str, multipart_id: str, folder: Path) -> dict:
        """The upload's meta.json; NoSuchMultipart if it is missing or was started for another key."""
        try:
            meta = json.loads((folder / "meta.json").read_text())
        except (FileNotFoundError, NotADirectoryError):
            raise NoSuchMultipart(key, multipart_id) from None
        if meta.get("key") != key:
            raise NoSuchMultipart(key, multipart_id)
        return meta

    @contextlib.contextmanager
    def _locked_data(self, key: str, multipart_id: str, folder: Path, lock: int) -> Iterator[int]:
        """The data file's descriptor, open for writing, under lock (fcntl.LOCK_SH to write a part,
        LOCK_EX to complete or abort); NoSuchMultipart if the upload was completed or aborted before the
        lock was had (the name no longer points at the file opened)."""
        path = folder / "data"
        try:
            fd = os.open(path, os.O_RDWR)
        except (FileNotFoundError, NotADirectoryError):
            raise NoSuchMultipart(key, multipart_id) from None
        try:
            fcntl.flock(fd, lock)
            try:
                still_there = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                still_there = False
            if not still_there:
                raise NoSuchMultipart(key, multipart_id)
            yield fd
        finally:
            os.close(fd)  # releases the lock

    @_reports_outages
    def start_multipart(self, key: str, *, part_size: int, content_type: str | None = None) -> str:
        validate_key(key)
        validate_part(1, 0, part_size)
        multipart_id = secrets.token_hex(16)
        parent = self.root / RESERVED_SEGMENT
        parent.mkdir(parents=True, exist_ok=True)
        # Made complete under a temporary name, then renamed: the upload exists whole or not at all.
        staging = Path(tempfile.mkdtemp(dir=parent, prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX))
        try:
            (staging / "parts").mkdir()
            (staging / "data").touch()
            meta = {"key": key, "part_size": part_size, "content_type": content_type}
            (staging / "meta.json").write_text(json.dumps(meta))
            os.rename(staging, parent / multipart_id)
            _fsync_folder(parent)  # the id handed out names an upload that survives a crash
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return multipart_id

    def _write_part(
        self, key: str, multipart_id: str, number: int, source: _ReadsInto, length: int, part_size: int
    ) -> str:
        """Write length bytes of source (positioned at the part's first byte) as part number; its ETag
        (the MD5 of its bytes, as S3's). The record of the part is written once the bytes are on disk."""
        validate_part(number, length, part_size)
        folder = self._multipart_folder(key, multipart_id)
        meta = self._meta(key, multipart_id, folder)
        if meta["part_size"] != part_size:
            raise ValueError(f"the upload's parts are {meta['part_size']} bytes, not {part_size}")
        digest = hashlib.md5(usedforsecurity=False)
        with self._locked_data(key, multipart_id, folder, fcntl.LOCK_SH) as fd:
            position, left = (number - 1) * part_size, length
            buffer = bytearray(min(BLOCK_SIZE, max(length, 1)))
            while left:
                view = memoryview(buffer)[: min(left, len(buffer))]
                got = source.readinto(view)
                if not got:
                    raise ValueError(f"the part's source ended {left} bytes short of {length}")
                digest.update(view[:got])
                written = 0
                while written < got:  # pwrite may write less than asked
                    written += os.pwrite(fd, view[written:got], position + written)
                position += got
                left -= got
            os.fsync(fd)
            etag = digest.hexdigest()
            record = folder / "parts" / str(number)
            temporary = record.with_name(f"{TEMP_PREFIX}{number}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
            with open(temporary, "w") as file:
                file.write(json.dumps({"etag": etag, "size": length}))
                file.flush()
                os.fsync(file.fileno())  # once put_part returns, its part survives a crash
            os.replace(temporary, record)  # a part sent again replaces its record whole
            _fsync_folder(record.parent)
        return etag

    @_reports_outages
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
        validate_key(key)
        validate_range(offset, offset + length)
        with open(path, "rb", buffering=0) as source:
            if os.fstat(source.fileno()).st_size < offset + length:
                raise ValueError(f"{os.fspath(path)!r} holds no {length} bytes from {offset}")
            source.seek(offset)
            return self._write_part(key, multipart_id, number, source, length, part_size)

    @_reports_outages
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
        validate_key(key)
        validate_range(start, stop)
        with self._open_object(source_key, buffering=0) as source:
            size = os.fstat(source.fileno()).st_size
            stop = size if stop is None else stop
            if stop > size or start >= stop:
                raise ValueError(f"no bytes [{start}, {stop}) in {source_key!r} of {size} bytes")
            source.seek(start)
            return self._write_part(
                key, multipart_id, number, cast(_ReadsInto, source), stop - start, part_size
            )

    @_reports_outages
    def complete_multipart(self, key: str, multipart_id: str, parts: list[tuple[int, str]]) -> int:
        folder = self._multipart_folder(key, multipart_id)
        target = self._path(key)
        try:
            meta = self._meta(key, multipart_id, folder)
            with self._locked_data(key, multipart_id, folder, fcntl.LOCK_EX) as fd:
                size = self._joined_size(folder, meta["part_size"], parts)
                os.ftruncate(fd, size)  # a last part sent longer before, or a later part, is cut off
                os.fsync(fd)
                for _ in range(5):
                    target.parent.mkdir(parents=True, exist_ok=True)
                    try:
                        os.replace(folder / "data", target)
                        break
                    except FileNotFoundError:
                        continue  # a concurrent delete() removed the folder as it became empty
                else:
                    raise OSError(f"could not make the folder of {key!r}")
                _fsync_folder(target.parent)
        except NoSuchMultipart:
            # Completed already (by this call before, or another process), or never there.
            if not target.is_file():
                raise
            size = target.stat().st_size
        shutil.rmtree(folder, ignore_errors=True)
        return size

    def _joined_size(self, folder: Path, part_size: int, parts: list[tuple[int, str]]) -> int:
        """The object's size once parts are joined; InvalidPart unless they are every part sent, 1 to n,
        with the ETags they were last sent with, every one but the last part_size bytes long. (S3 would
        leave out a part sent but not listed; Ceph RGW refuses to, and so does this backend.)"""
        validate_parts(parts)
        sent = {int(name) for name in os.listdir(folder / "parts") if name.isdigit()}
        if left_out := sorted(sent - {number for number, _ in parts}):
            raise InvalidPart(f"parts {left_out} were sent but are not joined")
        size = 0
        for number, etag in parts:
            try:
                record = json.loads((folder / "parts" / str(number)).read_text())
            except FileNotFoundError:
                raise InvalidPart(f"part {number} was never sent") from None
            if record["etag"] != etag:
                raise InvalidPart(f"part {number} was last sent with another ETag than {etag!r}")
            if number < len(parts) and record["size"] != part_size:
                raise InvalidPart(
                    f"part {number} holds {record['size']} bytes, not the {part_size} of a part"
                )
            size += record["size"]
        return size

    @_reports_outages
    def abort_multipart(self, key: str, multipart_id: str) -> None:
        try:
            folder = self._multipart_folder(key, multipart_id)
            self._meta(key, multipart_id, folder)
            with self._locked_data(key, multipart_id, folder, fcntl.LOCK_EX):
                # Renamed away under the lock, so a part waiting for it finds the upload gone.
                trash = folder.with_name(f"{TEMP_PREFIX}{multipart_id}.aborted{TEMP_SUFFIX}")
                os.rename(folder, trash)
        except NoSuchMultipart:
            return
        shutil.rmtree(trash, ignore_errors=True)

    # -- ranges and copies ---------------------------------------------------------------------------

    def _open_object(self, key: str, buffering: int = -1) -> BinaryIO:
        path = self._path(key)
        try:
            file = open(path, "rb", buffering=buffering)  # noqa: SIM115  (the caller closes it)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key) from None
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            file.close()
            raise ObjectNotFound(key)
        return file

    @_reports_outages
    def open_range(self, key: str, start: int, stop: int | None = None) -> BinaryIO:
        validate_key(key)
        validate_range(start, stop)
        file = self._open_object(key, buffering=0)
        return cast(BinaryIO, _FileRange(file, start, stop))

    @_reports_outages
    def copy(self, source_key: str, key: str) -> None:
        validate_key(key)
        with self._open_object(source_key) as source:
            # save: a temporary file beside the target, renamed into place once it is on disk.
            self.save(key, source)


def _fsync_folder(folder: Path) -> None:
    """Make a rename in folder durable (its entry is on disk, not only the file's bytes)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _FileRange(io.RawIOBase):
    """Bytes [start, stop) of an open file (stop None: to its end), as a readable stream."""

    def __init__(self, file: BinaryIO, start: int, stop: int | None):
        super().__init__()
        self._file, self._position, self._stop = file, start, stop

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        if self._stop is not None:
            view = view[: max(0, self._stop - self._position)]
        if not view:
            return 0
        data = os.pread(self._file.fileno(), len(view), self._position)
        view[: len(data)] = data
        self._position += len(data)
        return len(data)

    def close(self) -> None:
        self._file.close()
        super().close()
