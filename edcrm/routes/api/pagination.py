"""Keyset pagination by id with opaque cursors: no duplicate and no gap while rows are added."""

from __future__ import annotations

import base64
import binascii
import json

import sqlalchemy as sa

from ...extensions import db
from ...permissions import MAX_ID
from .inputs import Fields

DEFAULT_LIMIT, MAX_LIMIT = 50, 500


def encode_cursor(after_id: int) -> str:
    raw = json.dumps({"after": after_id}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> int | None:
    """The id a cursor continues after, or None if it is not a cursor of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        after = json.loads(raw)["after"]
    except (binascii.Error, ValueError, TypeError, KeyError):
        return None
    if isinstance(after, bool) or not isinstance(after, int) or not 0 <= after <= MAX_ID:
        return None
    return after


def page_params(fields: Fields) -> tuple[int | None, int | None]:
    """limit (1..500, default 50) and the id to continue after, from ?limit=&cursor=."""
    limit = fields.integer("limit", minimum=1, maximum=MAX_LIMIT, required=False, default=DEFAULT_LIMIT)
    cursor = fields.string("cursor", max_length=200, required=False)
    after = None
    if cursor is not None:
        after = decode_cursor(cursor)
        if after is None:
            fields.error("cursor", "is not a cursor this API returned")
    return limit, after


def paginate(stmt: sa.Select, id_column, limit: int, after: int | None) -> tuple[list, str | None]:
    """One page of stmt in id order, and the cursor of the next page (None on the last one)."""
    if after is not None:
        stmt = stmt.where(id_column > after)
    rows = list(db.session.execute(stmt.order_by(id_column).limit(limit + 1)).scalars())
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1].id)
