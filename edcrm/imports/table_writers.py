"""How a batch's rows reach the tables: one writer per database, behind one small interface.

PostgreSQL: the reading thread renders each lead's values as the tail of a COPY line and looks the
batch's phones up ahead (edcrm.imports.lookup); the transaction does not wait for its WAL flush; leads
and rejections go in by COPY, which has no parameters at all.

SQLite: a batch's transaction takes the database's write lock first (SQLite ignores FOR UPDATE); rows go
in by executemany, one row's parameters per statement.

The writer is chosen once per import and called once per batch, never per row.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

import sqlalchemy as sa

from ..extensions import db
from ..models import Branch, ImportRejection, Lead
from . import lookup
from .validation import LeadValues

if TYPE_CHECKING:
    from .batch_reader import RowOutcome

#: The columns a lead is written with: those the batch knows first, then the row's own values.
LEAD_COLUMNS = (
    "branch_id",
    "import_id",
    "status",
    "assigned_at",
    "created_at",
    "telecaller_id",
    "source_row",
    *LeadValues._fields,
)
REJECTION_COLUMNS = ("import_id", "row_number", "duplicate", "reasons", "cells")

#: A rejected row as the batch writer hands it over: (row_number, duplicate, reasons, cells).
Rejection = tuple[int, bool, str, list[str]]


class TableWriter(Protocol):
    #: Whether the reading thread looks each batch's phones up ahead (look_ahead).
    looks_ahead: bool

    def renderer(self) -> Callable[[LeadValues], str] | None:
        """For the reading thread: a function rendering a lead's values as the writer wants them."""

    def look_ahead(self, branch_id: int, phones: set[str]) -> lookup.Lookup | None:
        """For the reading thread: the branch's leads with phones, on a connection of its own."""

    def begin(self, branch_id: int) -> None:
        """Start a batch's transaction."""

    def find_leads(self, branch_id: int, phones: set[str]) -> lookup.KnownLeads:
        """The branch's leads with phones, in the batch's transaction."""

    def lead_rows(
        self, branch_id: int, import_id: int, now: datetime, leads: list[RowOutcome], telecallers: list[int]
    ) -> list:
        """The batch's new leads, each with its telecaller, as insert_leads takes them."""

    def insert_leads(self, rows: list) -> None: ...

    def insert_rejections(self, import_id: int, rejections: list[Rejection]) -> None: ...


def table_writer(engine: sa.Engine) -> TableWriter:
    """The writer for engine's database."""
    if engine.dialect.name == "postgresql":
        return PostgresqlWriter(engine)
    return SqliteWriter()


class CopyRenderer:
    """A lead's values as the tail of a line of COPY's CSV format (in the reading thread, so the
    thread that waits on the database has less to do). None becomes an empty unquoted field, which
    COPY reads as NULL; no value is an empty string (validation turns empty cells into None)."""

    def __init__(self):
        self.buffer = io.StringIO()
        self.writer = csv.writer(self.buffer, lineterminator="\n")

    def render(self, values: LeadValues) -> str:
        self.writer.writerow(values)
        line = self.buffer.getvalue()
        self.buffer.seek(0)
        self.buffer.truncate()
        return line


class PostgresqlWriter:
    looks_ahead = True

    def __init__(self, engine: sa.Engine):
        self.engine = engine

    def renderer(self) -> Callable[[LeadValues], str]:
        return CopyRenderer().render

    def look_ahead(self, branch_id: int, phones: set[str]) -> lookup.Lookup | None:
        return lookup.look_ahead(self.engine, branch_id, phones)

    def begin(self, branch_id: int) -> None:
        # No wait for the WAL flush at this batch's commit. A crash of PostgreSQL itself may lose the
        # last batches committed (a fraction of a second), but each whole, with the checkpoint that
        # counts it: the retry redoes them, exactly once. The import's final commit (completed) waits
        # for the flush of everything before it, and only then is the file deleted.
        db.session.execute(sa.text("SET LOCAL synchronous_commit = off"))

    def find_leads(self, branch_id: int, phones: set[str]) -> lookup.KnownLeads:
        return lookup.find_leads_postgresql(db.session, branch_id, phones)

    def lead_rows(
        self, branch_id: int, import_id: int, now: datetime, leads: list[RowOutcome], telecallers: list[int]
    ) -> list[str]:
        """COPY lines: the columns known to the batch, then the reading thread's rendering."""
        prefix = f"{branch_id},{import_id},new,{now.isoformat()},{now.isoformat()},"
        return [
            f"{prefix}{t},{o.row_number},{o.copy_values}" for t, o in zip(telecallers, leads, strict=True)
        ]

    def insert_leads(self, rows: list[str]) -> None:
        self._copy(Lead.__table__.name, LEAD_COLUMNS, "".join(rows))

    def insert_rejections(self, import_id: int, rejections: list[Rejection]) -> None:
        if not rejections:
            return
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows(
            (import_id, row, duplicate, reasons, json.dumps(cells, ensure_ascii=False))
            for row, duplicate, reasons, cells in rejections
        )
        self._copy(ImportRejection.__table__.name, REJECTION_COLUMNS, text.getvalue())

    def _copy(self, table: str, columns: Sequence[str], data: str) -> None:
        """COPY data (CSV lines) into table, in the session's transaction."""
        if not data:
            return
        raw = db.session.connection().connection.driver_connection  # psycopg 3, same transaction
        assert raw is not None
        statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT csv)"
        with raw.cursor() as cursor, cursor.copy(statement) as copy:
            copy.write(data)


class SqliteWriter:
    looks_ahead = False

    def renderer(self) -> None:
        return None

    def look_ahead(self, branch_id: int, phones: set[str]) -> None:
        return None

    def begin(self, branch_id: int) -> None:
        """Begin the batch's transaction with the database's write lock, held to its commit.

        SQLite ignores FOR UPDATE, and its driver begins a transaction only at the first write: the
        phones would be looked up outside it, and another import's batch could commit the same phones
        before this one's insert (a UNIQUE failure, then a retry). A write first (an UPDATE that changes
        nothing) waits for the lock (busy_timeout) and holds it, so the lookup sees every lead committed
        before and no other lead can be committed until this batch is: one batch of the database at a
        time, as the branch row's lock makes it one batch of the branch at a time on PostgreSQL.
        """
        db.session.execute(
            sa.update(Branch).where(Branch.id == branch_id).values(lead_cursor=Branch.lead_cursor)
        )

    def find_leads(self, branch_id: int, phones: set[str]) -> lookup.KnownLeads:
        return lookup.find_leads_sqlite(db.session, branch_id, phones)

    def lead_rows(
        self, branch_id: int, import_id: int, now: datetime, leads: list[RowOutcome], telecallers: list[int]
    ) -> list[tuple]:
        known = (branch_id, import_id, "new", now, now)
        return [(*known, t, o.row_number, *o.result) for t, o in zip(telecallers, leads, strict=True)]

    def insert_leads(self, rows: list[tuple]) -> None:
        self._insert(Lead.__table__, LEAD_COLUMNS, rows)

    def insert_rejections(self, import_id: int, rejections: list[Rejection]) -> None:
        self._insert(ImportRejection.__table__, REJECTION_COLUMNS, [(import_id, *r) for r in rejections])

    @staticmethod
    def _insert(table: sa.Table, columns: Sequence[str], rows: list[tuple]) -> None:
        if rows:
            db.session.execute(table.insert(), [dict(zip(columns, row, strict=True)) for row in rows])
