"""Spool files: where bytes wait on local disk on their way to storage (a chunk, a one-shot recording,
a stream S3 sends from disk, a recording being assembled).

Every process spools into a directory of its own, `TMPDIR/edcrm-spool/HOST-PID/`, made on first use and
removed when the process exits. A process killed mid-upload or mid-finalize (OOM, SIGKILL, a machine
restart) cannot remove its files, so `sweep()` removes the directories of this host's processes that
are gone: at every start (`create_app`) and from the hourly upload pruner. Nothing else writes
there, so a spool never outlives the process that made it by longer than the next start or the next
hour.

    with spool.named_file("edcrm-upload-") as file:   # a NamedTemporaryFile in this process's directory
        ...
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import shutil
import socket
import stat
import tempfile
import threading
import time
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

ROOT_NAME = "edcrm-spool"
#: Files older than this in TMPDIR itself (outside edcrm-spool/), named like spool files, are strays.
LOOSE_SPOOL_AGE_S = 24 * 3600
LOOSE_SPOOL_PREFIXES = ("edcrm-upload-", "edcrm-recording-", "edcrm-s3-")

_lock = threading.Lock()
_made: dict[int, Path] = {}  # pid -> its directory (a forked child makes its own)


def _host() -> str:
    """This machine's name as a safe path segment (processes of other hosts sharing TMPDIR are left be)."""
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname())[:64] or "host"


def _own_directory(path: Path) -> bool:
    """path is a real directory (not a link) of this user's: nobody else can read or plant spools."""
    status = os.lstat(path)
    return stat.S_ISDIR(status.st_mode) and status.st_uid == os.getuid()


def root() -> Path:
    """TMPDIR/edcrm-spool (TMPDIR/edcrm-spool-UID if another user has the first), private to this user."""
    base = Path(tempfile.gettempdir())
    for name in (ROOT_NAME, f"{ROOT_NAME}-{os.getuid()}"):
        path = base / name
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700)
        if _own_directory(path):
            return path
    raise PermissionError(f"no spool directory of this user's can be made in {base}")


def directory() -> Path:
    """This process's spool directory, made on first use (and again if something removed it)."""
    pid = os.getpid()
    path = _made.get(pid)
    if path is not None and path.is_dir():
        return path
    with _lock:
        path = root() / f"{_host()}-{pid}"
        if pid not in _made:
            # A directory of this name is a dead process's that had this pid: its files are strays.
            shutil.rmtree(path, ignore_errors=True)
            atexit.register(_remove, pid)
        path.mkdir(mode=0o700, exist_ok=True)
        _made[pid] = path
    return path


def named_file(prefix: str, suffix: str = "") -> IO[bytes]:
    """A new named temporary file (w+b) in this process's spool directory, removed when closed."""
    return tempfile.NamedTemporaryFile(prefix=prefix, suffix=suffix, dir=directory())


def spooled_file(prefix: str, max_size: int = 500 * 1024) -> IO[bytes]:
    """A temporary file (rb+) held in memory up to max_size, then on disk in this process's spool
    directory (werkzeug's form parts: anonymous files, so gone with the process whatever happens)."""
    return tempfile.SpooledTemporaryFile(max_size=max_size, mode="rb+", prefix=prefix, dir=str(directory()))


def _remove(pid: int) -> None:
    if os.getpid() == pid and pid in _made:  # not in a forked child that inherited the handler
        shutil.rmtree(_made.pop(pid), ignore_errors=True)


def process_alive(pid: int) -> bool:
    """Whether a process of this host has that pid (another user's counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def sweep(now: float | None = None) -> int:
    """Remove the spool directories of this host's processes that are gone, and files named like spool
    files that have lain loose in TMPDIR itself for a day; the count removed.
    Never raises: a sweep that cannot run leaves the spools for the next one."""
    removed = 0
    try:
        prefix = f"{_host()}-"
        for entry in os.scandir(root()):
            name = entry.name
            if not name.startswith(prefix) or not name[len(prefix) :].isdigit():
                continue
            pid = int(name[len(prefix) :])
            if pid != os.getpid() and not process_alive(pid):
                shutil.rmtree(entry.path, ignore_errors=True)
                removed += 1
        cutoff = (time.time() if now is None else now) - LOOSE_SPOOL_AGE_S
        for entry in os.scandir(tempfile.gettempdir()):
            if entry.name.startswith(LOOSE_SPOOL_PREFIXES) and entry.is_file(follow_symlinks=False):
                try:
                    if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                        os.unlink(entry.path)
                        removed += 1
                except OSError:  # another user's, or gone meanwhile
                    continue
    except OSError:
        log.warning("could not sweep the spool directories", exc_info=True)
    if removed:
        log.info("removed %d spool(s) of processes that are gone", removed)
    return removed
