"""Outages: which dependency an error shows to be down (the storage, the database, the broker), and what
a client is told of it. edcrm.routes.errors answers each one 503 with `Retry-After`."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from dataclasses import dataclass

import dramatiq.errors
import redis.exceptions
import sqlalchemy.exc

from ..storage.base import StorageUnavailable

#: Seconds a client is asked to wait before trying again after a 503.
RETRY_AFTER_S = 10


@dataclass(frozen=True)
class Outage:
    """A dependency that is down, as the client is told of it."""

    code: str
    title: str
    message: str


STORAGE_DOWN = Outage(
    "storage_unavailable",
    "File storage unavailable",
    "The file storage cannot be reached right now. Nothing was saved; please try again in a moment.",
)
DATABASE_DOWN = Outage(
    "database_unavailable",
    "Database unavailable",
    "The database cannot be reached right now. Nothing was changed; please try again in a moment.",
)
QUEUE_DOWN = Outage(
    "queue_unavailable",
    "Job queue unavailable",
    "The job queue cannot be reached right now. Nothing was queued; please try again in a moment.",
)

#: OSErrors of the web's own disk (the spools of uploads) that mean it cannot take files now.
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})

_DATABASE_ERRORS = (
    sqlalchemy.exc.OperationalError,  # cannot connect, connection lost, database locked or shutting down
    sqlalchemy.exc.DisconnectionError,
    sqlalchemy.exc.TimeoutError,  # no connection free in the pool in time
)
_BROKER_ERRORS = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    getattr(dramatiq.errors, "BrokerConnectionError", None) or dramatiq.errors.ConnectionError,
)


def _causes(error: BaseException) -> Iterator[BaseException]:
    """error, then the errors it was raised from or while handling (a wrapper keeps its cause)."""
    for _ in range(8):
        yield error
        following = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
        if following is None:
            return
        error = following


def outage_of(error: BaseException) -> Outage | None:
    """The dependency whose being down error shows, or None for any other error."""
    for cause in _causes(error):
        if isinstance(cause, StorageUnavailable):
            return STORAGE_DOWN
        if isinstance(cause, _DATABASE_ERRORS):
            return DATABASE_DOWN
        if isinstance(cause, sqlalchemy.exc.DBAPIError) and cause.connection_invalidated:
            return DATABASE_DOWN
        if isinstance(cause, _BROKER_ERRORS):
            return QUEUE_DOWN
        if isinstance(cause, OSError) and cause.errno in _DISK_FULL:
            return STORAGE_DOWN
    return None
