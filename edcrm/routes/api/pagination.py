"""Keyset pagination with cursors: no duplicate and no gap while rows are added.

A cursor is opaque to clients (they send back the `next` of a page), but its form is exact and
documented (edcrm/openapi.json): every string of that form continues some page, and any other string
is a 422. So a cursor never fails for being well-formed but unknown, and tools that read the document
(schemathesis) know the cursors the API takes.
"""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from ...extensions import db
from ...jobs.listing import Position
from ...permissions import MAX_ID
from .inputs import Fields

DEFAULT_LIMIT, MAX_LIMIT = 50, 500

#: An id cursor: the id a page ended at (0..MAX_ID), as 4 big-endian bytes in unpadded base64url. The
#: first character keeps the top bit 0 (ids are below 2^31) and the last one's unused bits are 0, so
#: each id has exactly one cursor and each such string is the cursor of an id.
ID_CURSOR = re.compile(r"[A-Za-f][A-Za-z0-9_-]{4}[AQgw]")

#: A job cursor: where a page of jobs (newest first) ended, as `MICROSECONDS.JOB_ID`, the microseconds
#: since 1970 (UTC) its last job was enqueued at, and that job's id (Dramatiq message ids are UUIDs).
JOB_CURSOR = re.compile(r"([0-9]{1,17})\.([0-9A-Za-z_-]{1,64})")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NOT_OURS = "is not a cursor this API returned"


def encode_cursor(after_id: int) -> str:
    return base64.urlsafe_b64encode(after_id.to_bytes(4, "big")).decode().rstrip("=")


def decode_cursor(cursor: str) -> int | None:
    """The id a cursor continues after, or None if it is not a cursor."""
    if not isinstance(cursor, str) or not ID_CURSOR.fullmatch(cursor):
        return None
    after = int.from_bytes(base64.urlsafe_b64decode(cursor + "=="), "big")
    return after if after <= MAX_ID else None  # the pattern rules it out; kept as the invariant


def encode_job_cursor(position: Position) -> str:
    micros = (position.enqueued_at.astimezone(UTC) - _EPOCH) // timedelta(microseconds=1)
    return f"{micros}.{position.job_id}"


def decode_job_cursor(cursor: str) -> Position | None:
    """The position a job cursor continues after, or None if it is not a job cursor."""
    match = JOB_CURSOR.fullmatch(cursor) if isinstance(cursor, str) else None
    if match is None:
        return None
    return Position(_EPOCH + timedelta(microseconds=int(match[1])), match[2])


def cursor_param(fields: Fields, decode):
    """?cursor= decoded, or None without one; an empty or malformed cursor is a field error."""
    cursor = fields.data.get("cursor")
    if cursor is None:
        return None
    after = decode(cursor)
    if after is None:
        fields.error("cursor", _NOT_OURS)
    return after


def page_params(fields: Fields) -> tuple[int | None, int | None]:
    """limit (1..500, default 50) and the id to continue after, from ?limit=&cursor=."""
    limit = fields.integer("limit", minimum=1, maximum=MAX_LIMIT, required=False, default=DEFAULT_LIMIT)
    return limit, cursor_param(fields, decode_cursor)


def paginate(stmt: sa.Select, id_column, limit: int, after: int | None) -> tuple[list, str | None]:
    """One page of stmt in id order, and the cursor of the next page (None on the last one)."""
    if after is not None:
        stmt = stmt.where(id_column > after)
    rows = list(db.session.execute(stmt.order_by(id_column).limit(limit + 1)).scalars())
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1].id)
