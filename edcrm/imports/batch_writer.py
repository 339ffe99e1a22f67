"""One batch of an import, committed in one transaction: its leads, its rejected rows, the import's
counters and checkpoint, and the branch cursor, together or not at all.

In that transaction:
  - the branch row is locked (its round-robin cursor; this also serialises the duplicate check of
    concurrent imports of the branch; on SQLite, which has no row locks, the table writer takes the
    database's write lock first) and the import row is locked;
  - the branch's leads with the batch's phones are known (edcrm.imports.lookup): the reading thread's
    look-ahead plus this import's commits since, when the cursor shows no other import committed
    meanwhile, else one query;
  - new leads are assigned round-robin (RoundRobin) and inserted, rejected rows are inserted into
    import_rejections (for the error report), by the database's table writer;
  - the import's counts, distribution and checkpoint_row (the last row of the batch) are updated, and
    the branch cursor advanced.

Duplicates: a phone already a lead of the branch, or accepted earlier in this file. Earlier batches of
the file are committed leads by the time a batch is checked (or remembered, for the few committed since
the look-ahead), so looking up the branch's leads finds both, and memory does not grow with the file
(no set of every phone seen). Within a batch, a dict catches repeats. A row rejected as invalid does not
claim its phone.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

import psycopg
import sqlalchemy as sa

from ..extensions import db
from ..jobs import Unrecoverable
from ..models import ImportStatus, LeadImport
from ..models.types import utcnow
from ..tuning import CpuGate
from .batch_reader import READ_AHEAD, RowOutcome
from .distribution import RoundRobin, advance_cursor, lock_cursor
from .lookup import KnownLeads, Lookup, RecentCommits
from .table_writers import Rejection, TableWriter

log = logging.getLogger(__name__)


class ImportSuperseded(Exception):
    """Another run of the same import has committed past this run's batch: this run stops."""


class BatchWriter:
    """Commits batches of validated rows for one import (see the module's docstring)."""

    def __init__(self, lead_import: LeadImport, gate: CpuGate, tables: TableWriter):
        self.lead_import = lead_import
        self.import_id = lead_import.id
        self.branch_id = lead_import.branch_id
        self.telecaller_ids = sorted(set(lead_import.telecaller_ids))
        self.cpu = gate  # the reading thread's gate (BatchReader.cpu)
        self.tables = tables
        # Far enough back to reach past any look-ahead the reading thread may still hand over.
        self.recent = RecentCommits(self.import_id, keep=READ_AHEAD + 4)

    def commit_batch(self, batch: Sequence[RowOutcome]) -> None:
        """Insert the batch's leads and rejections and move the checkpoint past it, in one transaction.

        Uses the reading thread's Lookup when it is still exact; if a lead it could not see breaks the
        unique constraint on (branch, phone), the transaction is redone with a lookup under the lock.
        """
        lookup = getattr(batch, "lookup", None)
        if lookup is None:
            self._commit(batch, None)
            return
        try:
            self._commit(batch, lookup)
        except (sa.exc.IntegrityError, psycopg.errors.UniqueViolation):  # the latter from COPY
            db.session.rollback()
            log.info("import %s: a lead the look-ahead missed; redoing the batch", self.import_id)
            self._commit(batch, None)

    def _commit(self, batch: Sequence[RowOutcome], lookup: Lookup | None) -> None:
        # The reading thread waits while this thread's Python keeps the database idle (see CpuGate).
        with self.cpu.closed():
            self.tables.begin(self.branch_id)
            cursor = lock_cursor(self.branch_id)
            lead_import = self._locked_import(first_row=batch[0].row_number)
            if lead_import.cursor_start is None:
                lead_import.cursor_start = cursor
            existing = self.known_leads(batch, lookup, cursor)

            leads: list[RowOutcome] = []
            rejections: list[Rejection] = []
            accepted: dict[str, int] = {}  # phone -> the row of this batch that became its lead
            invalid = duplicates = 0
            for outcome in batch:
                values = outcome.result
                if not isinstance(values, tuple):
                    invalid += 1
                    rejections.append((outcome.row_number, False, "; ".join(values), outcome.cells))
                    continue
                phone = values.phone_number
                if phone in accepted or phone in existing:
                    duplicates += 1
                    reason = self.duplicate_reason(phone, existing.get(phone), accepted.get(phone))
                    rejections.append((outcome.row_number, True, reason, outcome.cells))
                    continue
                accepted[phone] = outcome.row_number
                leads.append(outcome)

            rotation = RoundRobin(self.telecaller_ids, lead_import.cursor_start, lead_import.successful_rows)
            telecallers = rotation.take(len(leads))
            rows = self.tables.lead_rows(self.branch_id, self.import_id, utcnow(), leads, telecallers)
            distribution = self._distribution(lead_import, Counter(telecallers))

        self.tables.insert_leads(rows)
        self.tables.insert_rejections(self.import_id, rejections)
        advance_cursor(self.branch_id, len(leads))
        lead_import.checkpoint_row = batch[-1].row_number
        lead_import.processed_rows += len(batch)
        lead_import.successful_rows += len(leads)
        lead_import.failed_rows += invalid
        lead_import.duplicate_rows += duplicates
        lead_import.distribution = distribution
        db.session.commit()
        self.lead_import = lead_import
        self.recent.remember(cursor, accepted)

    def _locked_import(self, *, first_row: int) -> LeadImport:
        """The import's row, locked; ImportSuperseded if another run got to first_row already."""
        lead_import = db.session.get(LeadImport, self.import_id, with_for_update=True, populate_existing=True)
        if lead_import is None:
            raise Unrecoverable(f"import {self.import_id} was deleted while it ran")
        if lead_import.status != ImportStatus.RUNNING or lead_import.checkpoint_row >= first_row:
            raise ImportSuperseded(
                f"another run got to row {lead_import.checkpoint_row} ({lead_import.status.value}); "
                f"this one stops at row {first_row}"
            )
        return lead_import

    def _distribution(self, lead_import: LeadImport, assigned: Counter[int]) -> dict[str, int]:
        """The import's leads per telecaller (keys are strings: a JSON object), with this batch's."""
        distribution = dict(lead_import.distribution or {})
        for telecaller_id in self.telecaller_ids:
            key = str(telecaller_id)
            distribution[key] = distribution.get(key, 0) + assigned[telecaller_id]
        return distribution

    def duplicate_reason(self, phone: str, existing: tuple | None, earlier_row: int | None) -> str:
        if earlier_row is not None or existing is None:
            return f"duplicate: phone {phone} is also on row {earlier_row} of this file"
        import_id, source_row = existing
        if import_id == self.import_id and source_row is not None:
            return f"duplicate: phone {phone} is also on row {source_row} of this file"
        return f"duplicate: phone {phone} is already a lead of this branch"

    def known_leads(self, batch: Sequence[RowOutcome], lookup: Lookup | None, cursor: int) -> KnownLeads:
        """The branch's leads with a phone of the batch, now (the branch row locked): the look-ahead plus
        this import's commits since, or a lookup now."""
        if lookup is not None:
            known = self.recent.bring_up_to_date(lookup, cursor)
            if known is not None:
                return known
        phones = {o.result.phone_number for o in batch if isinstance(o.result, tuple)}
        return self.tables.find_leads(self.branch_id, phones)
