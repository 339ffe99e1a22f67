"""The lead lookup: which phones of a batch are already leads of the branch, and whose.

A phone is one lead per branch (the unique index on (branch_id, phone_number)). A batch's phones are
looked up either in its transaction, with the branch row locked (exact by construction), or ahead of
it by the reading thread on PostgreSQL (`look_ahead`, a `Lookup`), which the transaction brings up to
date with the leads this import committed since (`RecentCommits`), or looks up again when another
import of the branch committed meanwhile.

Never a statement over 65,535 parameters: PostgreSQL gets the phones as one array parameter, SQLite
in chunks of SQLITE_IN_CHUNK.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa

from ..models import Branch, Lead

#: Phones per `IN (...)` lookup on SQLite.
SQLITE_IN_CHUNK = 500

#: phone -> (import_id, source_row) of a lead of the branch (None, None for a lead not imported).
KnownLeads = dict[str, tuple[int | None, int | None]]


@dataclass(frozen=True)
class Lookup:
    """The branch's leads with a batch's phones, as a snapshot saw them, and the branch cursor then.

    Done by the reading thread ahead of the batch's transaction, to take the lookup off the thread that
    waits on PostgreSQL. It stays exact: in that transaction, with the branch row locked, the cursor
    has moved by exactly the leads this import committed since (which RecentCommits remembers) unless
    another import of the branch committed leads in between, in which case the phones are looked up
    again under the lock. (Leads written other than by an import do not move the cursor: the unique
    constraint on (branch, phone) fails the COPY, and the batch is redone with a lookup under the lock.)
    """

    cursor: int
    existing: KnownLeads
    phones: frozenset[str] = frozenset()  # the batch's phones that were looked up


def find_leads_postgresql(connection, branch_id: int, phones: Iterable[str]) -> KnownLeads:
    """The branch's leads that have one of phones (connection: a session or a Connection).

    One array parameter, however many phones, and one probe of the unique index on (branch_id,
    phone_number) per phone: the cost follows the batch, not the branch's size. (`phone_number =
    ANY(:phones)` lets the planner, misled by the statistics of a table that an import is filling, scan
    every lead of the branch for each batch: quadratic. OFFSET 0 keeps the subquery a per-phone lookup.)
    """
    ordered = sorted(phones)  # probes in index order: neighbouring pages, fewer cache misses
    if not ordered:
        return {}
    stmt = sa.text(
        "SELECT l.phone_number, l.import_id, l.source_row "
        "FROM unnest(CAST(:phones AS varchar[])) AS p(phone) CROSS JOIN LATERAL ("
        "  SELECT phone_number, import_id, source_row FROM leads"
        "  WHERE branch_id = :branch_id AND phone_number = p.phone OFFSET 0"
        ") AS l"
    )
    rows = connection.execute(stmt, {"branch_id": branch_id, "phones": ordered})
    return {phone: (import_id, row) for phone, import_id, row in rows}


def find_leads_sqlite(connection, branch_id: int, phones: Iterable[str]) -> KnownLeads:
    """The branch's leads that have one of phones, SQLITE_IN_CHUNK phones per query."""
    ordered = sorted(phones)
    found: KnownLeads = {}
    for start in range(0, len(ordered), SQLITE_IN_CHUNK):
        chunk = ordered[start : start + SQLITE_IN_CHUNK]
        stmt = sa.select(Lead.phone_number, Lead.import_id, Lead.source_row).where(
            Lead.branch_id == branch_id, Lead.phone_number.in_(chunk)
        )
        found.update({phone: (import_id, row) for phone, import_id, row in connection.execute(stmt)})
    return found


def look_ahead(engine: sa.Engine, branch_id: int, phones: set[str]) -> Lookup | None:
    """PostgreSQL: the Lookup of phones now, on a connection of its own; None if the branch is gone."""
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
        # One snapshot for both: the cursor tells the committing thread what came in since.
        cursor = conn.execute(
            sa.select(Branch.lead_cursor).where(Branch.id == branch_id)
        ).scalar_one_or_none()
        existing = find_leads_postgresql(conn, branch_id, phones)
        conn.rollback()
    return None if cursor is None else Lookup(cursor, existing, frozenset(phones))


class RecentCommits:
    """This import's last commits: the branch cursor before each, and the phones it accepted."""

    def __init__(self, import_id: int, keep: int):
        self.import_id = import_id
        self.commits: deque[tuple[int, dict[str, int]]] = deque(maxlen=keep)

    def remember(self, cursor_before: int, accepted: dict[str, int]) -> None:
        """A batch committed: cursor_before, and phone -> the row of the batch that became its lead."""
        self.commits.append((cursor_before, accepted))

    def bring_up_to_date(self, lookup: Lookup, cursor: int) -> KnownLeads | None:
        """lookup's leads plus this import's commits since, if those account for every move of the
        branch cursor up to cursor (read under the branch row's lock); else None: look up again."""
        since = [(before, phones) for before, phones in self.commits if before >= lookup.cursor]
        # Every commit of this import since the snapshot is remembered (the deque reaches back past it).
        complete = len(self.commits) < (self.commits.maxlen or 0) or len(self.commits) > len(since)
        if not complete or cursor != lookup.cursor + sum(len(phones) for _, phones in since):
            return None
        known = dict(lookup.existing)
        for _, phones in since:
            # Only the batch's own phones matter: a C-level intersection, not a merge of every phone
            # committed since (tens of thousands of tuples for each batch).
            for phone in phones.keys() & lookup.phones:
                known[phone] = (self.import_id, phones[phone])
        return known
