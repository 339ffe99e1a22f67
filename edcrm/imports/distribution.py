"""Round-robin assignment of imported leads to telecallers, continuing from a cursor kept per branch.

The cursor (Branch.lead_cursor) counts the leads the branch has handed out round-robin. An import
remembers the cursor as it was when it assigned its first lead (LeadImport.cursor_start), and gives its
k-th lead to telecaller `(cursor_start + k) mod n` of its telecallers sorted by id. So:

- within one import the leads go out in one unbroken rotation: per-telecaller counts never differ by
  more than one, even when another import of the branch interleaves its batches;
- the next import starts where the cursor stands, so three one-lead imports over the same three
  telecallers give each of them one lead;
- every batch adds its leads to the cursor while holding the branch row locked (SELECT … FOR UPDATE on
  PostgreSQL; SQLite has a single writer), so concurrent imports never lose an update.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from ..extensions import db
from ..models import Branch


class RoundRobin:
    """Hands out telecaller ids in rotation from position `start + assigned`."""

    def __init__(self, telecaller_ids: Sequence[int], start: int, assigned: int = 0):
        if not telecaller_ids:
            raise ValueError("round-robin needs at least one telecaller")
        self.ids = sorted(set(telecaller_ids))
        self.position = (start + assigned) % len(self.ids)

    def next(self) -> int:
        telecaller_id = self.ids[self.position]
        self.position = (self.position + 1) % len(self.ids)
        return telecaller_id

    def take(self, count: int) -> list[int]:
        """The next count telecaller ids, as count calls of next() give them (a batch's, in one go)."""
        ids, start = self.ids, self.position
        turns = -(-(start + count) // len(ids))  # enough whole rotations to reach start + count
        taken = (ids * turns)[start : start + count]
        self.position = (start + count) % len(ids)
        return taken


def lock_cursor(branch_id: int) -> int:
    """The branch's cursor, its row locked until the end of the transaction (FOR UPDATE)."""
    stmt = sa.select(Branch.lead_cursor).where(Branch.id == branch_id).with_for_update()
    cursor = db.session.execute(stmt).scalar_one_or_none()
    if cursor is None:
        raise LookupError(f"branch {branch_id} no longer exists")
    return cursor


def advance_cursor(branch_id: int, count: int) -> None:
    """Move the branch's cursor past count more leads (call with its row locked, in the same transaction)."""
    if count:
        db.session.execute(
            sa.update(Branch).where(Branch.id == branch_id).values(lead_cursor=Branch.lead_cursor + count)
        )
