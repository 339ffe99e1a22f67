"""Idempotency keys: what a request sent with `Idempotency-Key` answered, so that the same request sent
again (a phone retrying after a lost answer) gets that answer again instead of doing the work twice.

A key is a user's own (two users may pick the same key) and lives IDEMPOTENCY_KEY_HOURS. Its row is
inserted in the transaction that does the work, before the work: a second request with the same key
waits on the unique constraint until the first one commits (then it replays that answer) or rolls back
(then it does the work itself). So at most one of any number of concurrent duplicates does the work.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import Model, db
from .types import JSONType, UTCDateTime, utcnow

#: How long an answer is replayed (Stripe's 24 hours); older keys are pruned and may be used again.
IDEMPOTENCY_KEY_HOURS = 24

#: The longest key taken (Stripe's 255 is more than a UUID or two needs).
MAX_KEY_LENGTH = 100


class IdempotencyKey(Model):
    __tablename__ = "idempotency_keys"
    __table_args__ = (sa.UniqueConstraint("user_id", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(sa.String(MAX_KEY_LENGTH))
    #: The request it answered (method, route, SHA-256 of the canonical body): the same key with another
    #: request is refused rather than answered with the first one's result.
    fingerprint: Mapped[str] = mapped_column(sa.String(200))
    #: The answer: NULL only inside the transaction that inserted the row and is doing the work.
    status_code: Mapped[int | None] = mapped_column(sa.SmallInteger)
    response: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    #: Headers of the answer worth replaying (Location).
    headers: Mapped[dict[str, str]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)

    @staticmethod
    def cutoff(now: datetime | None = None) -> datetime:
        """Keys created before this are expired."""
        return (now or utcnow()) - timedelta(hours=IDEMPOTENCY_KEY_HOURS)

    @classmethod
    def find(cls, user_id: int, key: str) -> IdempotencyKey | None:
        """The user's live key of this name, or None."""
        stmt = sa.select(cls).where(cls.user_id == user_id, cls.key == key, cls.created_at >= cls.cutoff())
        return db.session.execute(stmt).scalar_one_or_none()

    @classmethod
    def forget_expired(cls, user_id: int, key: str) -> None:
        """Drop the user's expired key of this name, if any, so that the name can be used again."""
        stmt = sa.delete(cls).where(cls.user_id == user_id, cls.key == key, cls.created_at < cls.cutoff())
        db.session.execute(stmt)

    @classmethod
    def prune(cls, now: datetime | None = None) -> int:
        """Delete every expired key (the hourly pruner); how many went."""
        result = db.session.execute(sa.delete(cls).where(cls.created_at < cls.cutoff(now)))
        db.session.commit()
        return result.rowcount or 0  # type: ignore[attr-defined]
