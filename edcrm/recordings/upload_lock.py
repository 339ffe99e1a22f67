"""One writer per upload, whichever web process or host serves its requests.

    with upload_lock.hold(upload.id) as lease:   # UploadLocked if another request holds it
        ...                                      # stream the body; lease.renew() as it goes

On PostgreSQL the lock is a session advisory lock (`pg_try_advisory_lock`) taken on a connection of the
pool kept for the request's duration: it is released in `finally`, and by PostgreSQL itself when the
connection ends (a process killed mid-PATCH holds nothing). SQLite has no such locks, so there it is a
lease on the upload's row: a conditional UPDATE of `locked_by`/`locked_until` that only succeeds where
no other holder's lease is running, renewed as the body arrives (`renew`) and dropped at the end. A
holder that dies leaves a lease that simply runs out.

Neither touches the caller's session: the lock has its own connection, so the request's transactions
come and go (and none stays open while a body arrives) while the lock stays. On SQLite the caller ends
its transaction before the block ends (the lease's release writes, and SQLite has one writer).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Iterator
from datetime import timedelta

import sqlalchemy as sa
from flask import current_app

from ..extensions import db
from ..models import RecordingUpload
from ..models.types import utcnow
from .errors import UploadLocked

log = logging.getLogger(__name__)

#: The first key of the two-key advisory lock: recording uploads' namespace (b"tusU"), so that no other
#: advisory lock of the application can take the same key.
NAMESPACE = int.from_bytes(b"tusU", "big", signed=True)

LOCKED_MESSAGE = "Another request is sending bytes to this upload right now. Try again once it has ended."


def lease_seconds() -> float:
    """How long a SQLite lease lasts without renewal: longer than a body may stall (BODY_TIMEOUT_S)
    between two renewals, so a live writer never loses it."""
    configured = current_app.config.get("UPLOAD_LEASE_S")
    if configured:
        return float(configured)
    return max(60.0, 2.0 * float(current_app.config.get("BODY_TIMEOUT_S", 30)))


def _holder() -> str:
    """A name for this holder, unique across hosts and processes (locked_by is 64 characters)."""
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{secrets.token_hex(8)}"


def _advisory_key(upload_id: str) -> int:
    """The upload id as the 32-bit second key of the advisory lock (a collision only makes two uploads
    wait for each other, never mixes their bytes)."""
    return int.from_bytes(hashlib.blake2b(upload_id.encode(), digest_size=4).digest(), "big", signed=True)


class Lease:
    """What hold() yields: `renew()` keeps a SQLite lease alive (and raises UploadLocked if it was lost),
    `confirm()` checks it is still held, before a commit; on PostgreSQL both do nothing, the advisory
    lock lasting as long as its connection."""

    def renew(self) -> None:
        return None

    def confirm(self) -> None:
        return None


class _RowLease(Lease):
    def __init__(self, upload_id: str, seconds: float):
        self.upload_id = upload_id
        self.holder = _holder()
        self.seconds = seconds
        self._renewed_at = 0.0

    def _write(self, *, take: bool) -> bool:
        now = utcnow()
        table = RecordingUpload.__table__
        condition = table.c.locked_by == self.holder
        if take:
            condition = sa.or_(condition, table.c.locked_by.is_(None), table.c.locked_until < now)
        statement = (
            sa.update(table)
            .where(table.c.id == self.upload_id, condition)
            # updated_at is the upload's last sign of life for pruning: a lease is none of its own.
            .values(
                locked_by=self.holder,
                locked_until=now + timedelta(seconds=self.seconds),
                updated_at=table.c.updated_at,
            )
        )
        with db.engine.begin() as connection:
            taken = connection.execute(statement).rowcount == 1
        if taken:
            self._renewed_at = time.monotonic()
        return taken

    def take(self) -> None:
        if not self._write(take=True):
            raise UploadLocked(LOCKED_MESSAGE)

    def renew(self) -> None:
        # A write every third of the lease is enough to keep it; more would cost every block a commit.
        if time.monotonic() - self._renewed_at < self.seconds / 3:
            return
        self.confirm()

    def confirm(self) -> None:
        if not self._write(take=False):
            raise UploadLocked("This upload's lease ran out and another request took it.")

    def release(self) -> None:
        table = RecordingUpload.__table__
        try:
            with db.engine.begin() as connection:
                connection.execute(
                    sa.update(table)
                    .where(table.c.id == self.upload_id, table.c.locked_by == self.holder)
                    .values(locked_by=None, locked_until=None, updated_at=table.c.updated_at)
                )
        except Exception:  # the lease then runs out by itself; the request's own outcome matters more
            log.exception("could not release the lease on upload %s", self.upload_id)


@contextlib.contextmanager
def hold(upload_id: str) -> Iterator[Lease]:
    """Hold the upload's lock for the block; UploadLocked at once if another request holds it."""
    if db.engine.dialect.name == "postgresql":
        with _advisory(upload_id) as lease:
            yield lease
        return
    row_lease = _RowLease(upload_id, lease_seconds())
    row_lease.take()
    try:
        yield row_lease
    finally:
        row_lease.release()


@contextlib.contextmanager
def _advisory(upload_id: str) -> Iterator[Lease]:
    key = _advisory_key(upload_id)
    connection = db.engine.connect()
    try:
        locked = connection.execute(
            sa.text("SELECT pg_try_advisory_lock(:namespace, :key)"), {"namespace": NAMESPACE, "key": key}
        ).scalar_one()
        connection.commit()  # the lock belongs to the session, not to this transaction
        if not locked:
            raise UploadLocked(LOCKED_MESSAGE)
        try:
            yield Lease()
        finally:
            try:
                connection.execute(
                    sa.text("SELECT pg_advisory_unlock(:namespace, :key)"),
                    {"namespace": NAMESPACE, "key": key},
                )
                connection.commit()
            except Exception:
                # A session that cannot unlock must not go back to the pool still holding the lock:
                # closed for good, PostgreSQL releases it.
                log.exception("could not release the advisory lock of upload %s", upload_id)
                connection.invalidate()
    finally:
        connection.close()
