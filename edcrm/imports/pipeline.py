"""The import job: a stored CSV becomes leads of a branch, streamed, in batches, exactly once.

    run_import(import_id)
      1. checks: the import exists and is not over, its file is stored (else Unrecoverable: cancelled);
      2. a first pass over the file: encoding, delimiter, header (a missing required column cancels
         the import, naming it and the headers found), strict parsing of every record (broken quoting
         cancels the import before a single lead is written), whether any row holds bytes that are
         not text (a NUL, a byte the encoding has no character for: those rows are rejected, see
         scan) and the number of rows (`total_rows`);
      3. a second pass, row by row, in batches of BATCH_ROWS: a reading thread (BatchReader) parses and
         validates each row and, on PostgreSQL, looks the batch's phones up among the branch's leads
         ahead of time (Lookup); then, in ONE transaction per batch,
           - the branch row is locked (its round-robin cursor; this also serialises the duplicate check
             of concurrent imports of the branch; on SQLite, which has no row locks, the database's
             write lock is taken first, see take_write_lock) and the import row is locked,
           - the branch's leads with the batch's phones are known: the look-ahead plus this import's
             commits since, when the cursor shows no other import committed meanwhile, else one query,
           - new leads are assigned round-robin and inserted (COPY on PostgreSQL, executemany on SQLite),
             rejected rows are inserted into import_rejections (for the error report),
           - the import's counts, distribution and checkpoint_row (the last row of the batch) are
             updated, and the branch cursor advanced;
      4. completed, with finished_at; only then is the uploaded file deleted.

Exactly once. A batch's leads, its rejected rows, the import's counters and checkpoint, and the branch
cursor are committed together or not at all. A retry or a redelivery (after a crash, a SIGKILL, a lost
worker) reads the file again from the start, skips every row up to checkpoint_row and goes on: rows of
a committed batch are never inserted again, rows of a batch that did not commit are inserted exactly
once, and the rotation resumes at the same telecaller. The file is immutable and parsing deterministic,
so row numbers mean the same on every run. The unique constraint on leads (import_id, source_row)
would turn any slip in this reasoning into a failed batch, never a duplicate. A second run of the same
import overlapping the first (a redelivery while the first worker still lives) finds, under the import
row's lock, a checkpoint past its batch and stops, leaving the work to the first.

Duplicates: a phone already a lead of the branch, or accepted earlier in this file. Earlier batches of
the file are committed leads by the time a batch is checked (or remembered, for the few committed since
the look-ahead), so looking up the branch's leads finds both, and memory does not grow with the file
(no set of every phone seen). Within a batch, a
dict catches repeats. A row rejected as invalid does not claim its phone.

Never a statement over 65,535 parameters: COPY has none; the duplicate lookup passes the batch's
phones as one array on PostgreSQL and in chunks of SQLITE_IN_CHUNK on SQLite; executemany sends one
row's parameters per statement.
"""

from __future__ import annotations

import csv
import gc
import io
import json
import logging
import queue
import sys
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import psycopg
import sqlalchemy as sa

from ..extensions import db
from ..jobs import Unrecoverable
from ..models import Branch, ImportRejection, ImportStatus, Lead, LeadImport
from ..models.lead_import import FINAL_STATUSES
from ..models.types import utcnow
from ..storage import ObjectNotFound, get_storage
from .distribution import RoundRobin, advance_cursor, lock_cursor
from .headers import MissingColumns, map_columns
from .reader import CsvFormatError, NotCsv, open_csv, row_damage, utf8_evidence
from .validation import LeadValues, RowValidator

log = logging.getLogger(__name__)

#: Rows validated, checked and inserted per transaction (and between two progress updates).
BATCH_ROWS = 8_000
#: Validated batches the reading thread may hold ready (memory: about READ_AHEAD + 2 batches).
READ_AHEAD = 2
#: Phones per `IN (...)` lookup on SQLite.
SQLITE_IN_CHUNK = 500

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


class ImportSuperseded(Exception):
    """Another run of the same import has committed past this run's batch: this run stops."""


# -- the job ------------------------------------------------------------------------------------------------


def run_import(import_id: int) -> None:
    """Import the CSV of import import_id (see the module's docstring). Unrecoverable ends the import
    cancelled, with its reason in `error`; any other error leaves it running for the job's retry."""
    lead_import = db.session.get(LeadImport, import_id)
    if lead_import is None:
        raise Unrecoverable(f"import {import_id} no longer exists")
    if lead_import.status in FINAL_STATUSES:
        # A redelivery after the final commit: finish the cleanup, if a crash interrupted it.
        delete_upload(lead_import)
        if lead_import.status == ImportStatus.COMPLETED:
            return
        raise Unrecoverable(f"import {import_id} is already {lead_import.status.value}")
    if not lead_import.storage_key:
        cancel(lead_import, "The uploaded file is gone; upload it again.")

    if lead_import.status == ImportStatus.QUEUED:
        lead_import.status = ImportStatus.RUNNING
        lead_import.started_at = utcnow()
        db.session.commit()

    try:
        reading = scan(lead_import)
        import_rows(lead_import, reading)
    except ObjectNotFound:
        cancel(lead_import, "The uploaded file is missing from storage; upload it again.")
    except ImportSuperseded as error:
        db.session.rollback()
        log.warning("import %s: %s", import_id, error)
        return
    complete(lead_import)


@dataclass(frozen=True)
class Reading:
    """How the second pass reads the file, as the first pass found it."""

    encoding: str
    lenient: bool = False  # bytes that are not text in the encoding are escaped, not raised
    damaged: bool = False  # rows may hold NULs or escaped bytes: each row is checked (row_damage)


def scan(lead_import: LeadImport) -> Reading:
    """The first pass: check the header and every record, count the rows; how to read them.

    Cancels the import (Unrecoverable) on a file that is not CSV text, has no header, lacks a required
    column or is malformed anywhere, before any lead is written. A byte that is not text in the file's
    encoding, or a NUL, makes its row rejected, with a reason naming it, and the rest is imported: a
    file is never decoded another way once its text proved an encoding. (Only a file whose first 64 KiB
    are plain ASCII, which prove nothing, and whose later bytes fail UTF-8 without UTF-8 characters
    outnumbering them is read as Windows-1252.)
    """
    key = lead_import.storage_key
    encoding, lenient, sample_ascii = None, False, False
    while True:
        try:
            with open_csv(key, encoding, lenient=lenient) as csv_file:
                encoding, sample_ascii = csv_file.encoding, csv_file.sample_ascii
                try:
                    map_columns(csv_file.header)
                except MissingColumns as error:
                    cancel(lead_import, str(error), source_columns=csv_file.header)
                total = csv_file.count_records()
                damaged = lenient or csv_file.nul_seen
            if total is None:  # malformed somewhere: parse again, row by row, for the row to name
                with open_csv(key, encoding, lenient=lenient) as csv_file:
                    sum(1 for _ in csv_file.records)  # raises CsvFormatError
                cancel(lead_import, "The file is not valid CSV. Nothing was imported.")
        except NotCsv as error:
            cancel(lead_import, f"The file is not CSV text: {error}.")
        except CsvFormatError as error:
            cancel(lead_import, f"{error} Nothing was imported.")
        except UnicodeDecodeError as error:
            if lenient:  # escaping never raises; in case it did, say so rather than loop
                cancel(lead_import, f"The file is not valid {encoding} text ({error.reason}).")
            if encoding == "utf-8" and sample_ascii and not utf8_evidence(key):
                encoding = "cp1252"
            else:
                lenient = True
            continue
        break
    lead_import.total_rows = total
    lead_import.source_columns = list(csv_file.header)
    if not lead_import.distribution:
        lead_import.distribution = {str(i): 0 for i in sorted(set(lead_import.telecaller_ids))}
    db.session.commit()
    return Reading(encoding, lenient, damaged)


def import_rows(lead_import: LeadImport, reading: Reading) -> None:
    """The second pass: every row after the import's checkpoint, batch by batch (see commit_batch)."""
    postgres = db.engine.dialect.name == "postgresql"
    reader = BatchReader(
        get_storage(),
        lead_import.storage_key,
        reading,
        after_row=lead_import.checkpoint_row,
        render_copy=postgres,
        precheck=(db.engine, lead_import.branch_id) if postgres else None,
    )
    importer = BatchImporter(lead_import, reader.cpu)
    with prompt_thread_switches(), fewer_collections(), reader:
        for batch in reader:
            importer.commit_batch(batch)


#: While an import runs: how long (seconds) a thread may hold the GIL while another waits for it.
IMPORT_SWITCH_INTERVAL = 0.0005
_switches_lock = threading.Lock()
_switches_users = 0
_switches_saved = 0.005


@contextmanager
def prompt_thread_switches() -> Iterator[None]:
    """Lower the interpreter's switch interval (default 5 ms) while imports run in this process.

    The job's thread spends most of an import waiting on PostgreSQL, and each time an answer arrives it
    needs the GIL back from the reading thread, which is busy parsing and validating: with the default
    interval each of the ~10 round trips of a batch can wait up to 5 ms for it. The setting is
    process-wide, so it is counted: the last import to finish restores the previous value.
    """
    global _switches_users, _switches_saved
    with _switches_lock:
        if _switches_users == 0:
            _switches_saved = sys.getswitchinterval()
            sys.setswitchinterval(min(_switches_saved, IMPORT_SWITCH_INTERVAL))
        _switches_users += 1
    try:
        yield
    finally:
        with _switches_lock:
            _switches_users -= 1
            if _switches_users == 0:
                sys.setswitchinterval(_switches_saved)


#: While an import runs: allocations (net) between two collections of the youngest generation (default 700).
IMPORT_GC_THRESHOLD = 20_000
_collections_lock = threading.Lock()
_collections_users = 0
_collections_saved = (700, 10, 10)
_collections_froze = False


@contextmanager
def fewer_collections() -> Iterator[None]:
    """Spare an import the cyclic garbage collector's passes over objects that outlive it.

    An import allocates several objects per row (cells, values, outcomes), freed by reference counting
    batch by batch; with the default threshold they trigger a young collection every 700 of them and,
    every hundred of those, a full one over every object of the process (the app's modules, SQLAlchemy's
    caches...). Measured in process: about a fifth of the import's CPU time. So while imports run, the
    objects that existed before are frozen (left out of collections, gc.freeze) and young collections
    come every IMPORT_GC_THRESHOLD allocations; cyclic garbage is still collected, only later. Process-wide,
    so counted like prompt_thread_switches: the last import to finish unfreezes and restores.
    """
    global _collections_users, _collections_saved, _collections_froze
    with _collections_lock:
        if _collections_users == 0:
            _collections_saved = gc.get_threshold()
            # Objects frozen by someone else stay frozen: only a freeze of ours is undone after.
            _collections_froze = gc.get_freeze_count() == 0
            if _collections_froze:
                gc.freeze()
            gc.set_threshold(max(_collections_saved[0], IMPORT_GC_THRESHOLD), *_collections_saved[1:])
        _collections_users += 1
    try:
        yield
    finally:
        with _collections_lock:
            _collections_users -= 1
            if _collections_users == 0:
                gc.set_threshold(*_collections_saved)
                if _collections_froze:
                    gc.unfreeze()


class CpuGate:
    """Lets the job's thread pause the reading thread while it runs Python between two waits on
    PostgreSQL.

    That stretch (locks, the duplicate check and rotation of each row, the rendering of the batch) keeps
    PostgreSQL idle until the batch's COPY is sent: sharing the GIL with the reading thread there made
    it several times longer. The reading thread checks the gate before each row and waits while it is
    closed; it gets the CPU back while the job's thread waits for the COPY and the commit, which is
    where it had been meant to run all along.
    """

    def __init__(self):
        self.open = threading.Event()
        self.open.set()

    @contextmanager
    def closed(self) -> Iterator[None]:
        self.open.clear()
        try:
            yield
        finally:
            self.open.set()

    def wait(self, stopping: threading.Event) -> None:
        while not self.open.wait(0.1) and not stopping.is_set():
            pass


class BatchReader:
    """Reads, parses and validates the rows after a checkpoint in a thread of its own, at most
    READ_AHEAD batches ahead of the transactions that commit them.

    While PostgreSQL works on one batch (COPY, index updates, commit), the job's thread waits without
    holding the GIL, so this thread prepares the next: the import takes about as long as the longer of
    the two, not their sum. It touches no database and no app context. Batches still commit one by one
    in file order, so the exactly-once reasoning is unchanged. Errors reach the iterating thread.
    """

    _END = object()

    def __init__(
        self,
        storage,
        key: str,
        reading: Reading,
        *,
        after_row: int,
        render_copy: bool,
        precheck: tuple[sa.Engine, int] | None = None,
    ):
        self.storage, self.key, self.reading, self.after_row = storage, key, reading, after_row
        self.render_copy = render_copy
        self.precheck = precheck  # (engine, branch_id): look the phones up ahead, on a connection of its own
        self.batches: queue.Queue = queue.Queue(maxsize=READ_AHEAD)
        self.cpu = CpuGate()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._read, name="import-reader", daemon=True)

    def __enter__(self) -> BatchReader:
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stopping.set()  # the thread gives up within a put timeout, even if nobody takes its batch
        self.cpu.open.set()
        self.thread.join()

    def __iter__(self) -> Iterator[Batch]:
        while True:
            item = self.batches.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def _read(self) -> None:
        try:
            reading = self.reading
            with open_csv(self.key, reading.encoding, self.storage, lenient=reading.lenient) as csv_file:
                validate = RowValidator(map_columns(csv_file.header)).validate
                if reading.damaged:  # only then a check per row: clean files keep their speed
                    validate = screened(validate, csv_file.header, reading.encoding)
                render = CopyRenderer().render if self.render_copy else None
                batch = Batch()
                size = BATCH_ROWS
                may_run = self.cpu.open
                for row_number, cells in csv_file.records:
                    if row_number <= self.after_row:
                        continue  # committed by an earlier run
                    if not may_run.is_set():
                        self.cpu.wait(self.stopping)
                    result = validate(cells)
                    line = render(result) if render is not None and isinstance(result, tuple) else None
                    batch.append(RowOutcome(row_number, cells, result, line))
                    if len(batch) == size:
                        if not self._put(self._looked_up(batch)):
                            return
                        batch = Batch()
                if batch and not self._put(self._looked_up(batch)):
                    return
            self._put(self._END)
        except BaseException as error:  # handed over, raised in the job's thread
            self._put(error)

    def _looked_up(self, batch: Batch) -> Batch:
        """batch, with its phones looked up among the branch's leads now (see Lookup)."""
        if self.precheck is not None:
            engine, branch_id = self.precheck
            with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
                # One snapshot for both: the cursor tells the committing thread what came in since.
                cursor = conn.execute(
                    sa.select(Branch.lead_cursor).where(Branch.id == branch_id)
                ).scalar_one_or_none()
                phones = batch.phones()
                existing = find_leads(conn, branch_id, phones, postgres=True)
                conn.rollback()
            if cursor is not None:
                batch.lookup = Lookup(cursor, existing, frozenset(phones))
        return batch

    def _put(self, item) -> bool:
        while not self.stopping.is_set():
            try:
                self.batches.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False


def screened(validate, header: list[str], encoding: str):
    """validate, but a row holding a NUL or a byte that is not text is rejected saying where (its cells
    made printable for the error report) before its values are looked at."""

    def validate_screened(cells: list[str]):
        damage = row_damage(cells, header, encoding)  # cleans the cells it names, in place
        return damage if damage else validate(cells)

    return validate_screened


def complete(lead_import: LeadImport) -> None:
    lead_import.status = ImportStatus.COMPLETED
    lead_import.finished_at = utcnow()
    db.session.commit()
    log.info(
        "import %s completed: %d rows, %d leads, %d invalid, %d duplicates",
        lead_import.id,
        lead_import.total_rows,
        lead_import.successful_rows,
        lead_import.failed_rows,
        lead_import.duplicate_rows,
    )
    delete_upload(lead_import)


def cancel(lead_import: LeadImport, message: str, *, source_columns: Sequence[str] | None = None):
    """End the import cancelled with message (its file deleted), and raise Unrecoverable(message)."""
    db.session.rollback()
    lead_import = db.session.get(LeadImport, lead_import.id, populate_existing=True)
    if lead_import is not None and lead_import.status not in FINAL_STATUSES:
        if source_columns is not None:
            lead_import.source_columns = list(source_columns)
        lead_import.status = ImportStatus.CANCELLED
        lead_import.error = message
        lead_import.finished_at = utcnow()
        db.session.commit()
        delete_upload(lead_import)
    raise Unrecoverable(message)


def fail_import(import_id: int, last_error: str | None) -> None:
    """The job's last attempt failed: the import is failed, and its file, no longer needed, deleted."""
    lead_import = db.session.get(LeadImport, import_id)
    if lead_import is None:
        return
    if lead_import.status not in FINAL_STATUSES:
        lead_import.status = ImportStatus.FAILED
        detail = f": {last_error}" if last_error else ""
        lead_import.error = f"The import failed after its retries{detail}"
        lead_import.finished_at = utcnow()
        db.session.commit()
    delete_upload(lead_import)


def delete_upload(lead_import: LeadImport) -> None:
    """Delete a finished import's uploaded file (its status is committed first, by the callers), then
    forget its key. A crash in between leaves the key, and the next delivery deletes again."""
    if not lead_import.storage_key:
        return
    get_storage().delete(lead_import.storage_key)
    lead_import.storage_key = None
    db.session.commit()


# -- one batch ----------------------------------------------------------------------------------------------


@dataclass(slots=True)
class RowOutcome:
    row_number: int
    cells: list[str]
    result: LeadValues | list[str]  # the lead's values, or why the row is invalid
    copy_values: str | None = None  # PostgreSQL: the values as the end of a COPY line


@dataclass(frozen=True)
class Lookup:
    """The branch's leads with a batch's phones, as a snapshot saw them, and the branch cursor then.

    Done by the reading thread ahead of the batch's transaction, to take the lookup off the thread that
    waits on PostgreSQL. It stays exact: in that transaction, with the branch row locked, the cursor
    has moved by exactly the leads this import committed since (which the importer remembers) unless
    another import of the branch committed leads in between, in which case the phones are looked up
    again under the lock. (Leads written other than by an import would not move the cursor: the unique
    constraint on (branch, phone) fails the COPY, and the batch is redone with a lookup under the lock.)
    """

    cursor: int
    existing: dict[str, tuple[int | None, int | None]]
    phones: frozenset[str] = frozenset()  # the batch's phones that were looked up


class Batch(list):
    """Rows of one transaction, in file order, and the reading thread's Lookup of their phones."""

    lookup: Lookup | None = None

    def phones(self) -> set[str]:
        return {o.result.phone_number for o in self if isinstance(o.result, tuple)}


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


@dataclass
class BatchImporter:
    """Commits batches of validated rows for one import (see the module's docstring)."""

    lead_import: LeadImport
    cpu: CpuGate  # the reading thread's gate (BatchReader.cpu)
    import_id: int = field(init=False)
    branch_id: int = field(init=False)
    telecaller_ids: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.import_id = self.lead_import.id
        self.branch_id = self.lead_import.branch_id
        self.telecaller_ids = sorted(set(self.lead_import.telecaller_ids))
        if not self.telecaller_ids:
            cancel(self.lead_import, "The import has no telecallers to assign leads to.")
        self.postgres = db.engine.dialect.name == "postgresql"
        # (branch cursor before, phones accepted) of this import's last commits, for Lookup.
        self.recent: deque[tuple[int, dict[str, int]]] = deque(maxlen=READ_AHEAD + 4)

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
        # The reading thread waits while this thread's Python keeps PostgreSQL idle (see CpuGate).
        with self.cpu.closed():
            if self.postgres:
                # No wait for the WAL flush at this batch's commit. A crash of PostgreSQL itself may lose
                # the last batches committed (a fraction of a second), but each whole, with the
                # checkpoint that counts it: the retry redoes them, exactly once. The import's final
                # commit (completed) waits for the flush of everything before it, and only then is the
                # file deleted.
                db.session.execute(sa.text("SET LOCAL synchronous_commit = off"))
            else:
                take_write_lock(self.branch_id)
            cursor = lock_cursor(self.branch_id)
            lead_import = db.session.get(
                LeadImport, self.import_id, with_for_update=True, populate_existing=True
            )
            if lead_import is None:
                raise Unrecoverable(f"import {self.import_id} was deleted while it ran")
            if (
                lead_import.status != ImportStatus.RUNNING
                or lead_import.checkpoint_row >= batch[0].row_number
            ):
                raise ImportSuperseded(
                    f"another run got to row {lead_import.checkpoint_row} ({lead_import.status.value}); "
                    f"this one stops at row {batch[0].row_number}"
                )
            if lead_import.cursor_start is None:
                lead_import.cursor_start = cursor
            rotation = RoundRobin(self.telecaller_ids, lead_import.cursor_start, lead_import.successful_rows)

            existing = self.known_leads(batch, lookup, cursor)
            now = utcnow()
            # PostgreSQL: COPY lines; the columns known to the batch, then the reading thread's rendering.
            copy_prefix = f"{self.branch_id},{self.import_id},new,{now.isoformat()},{now.isoformat()},"
            leads, rejections = [], []
            accepted: dict[str, int] = {}  # phone -> the row of this batch that became its lead
            # The rotation, inlined: this loop runs once per row, on the thread that waits for PostgreSQL.
            ids, position = rotation.ids, rotation.position
            per_telecaller = dict.fromkeys(ids, 0)
            invalid = duplicates = 0
            for outcome in batch:
                values = outcome.result
                if not isinstance(values, tuple):
                    invalid += 1
                    rejections.append(self.rejection(outcome, "; ".join(values), duplicate=False))
                    continue
                phone = values.phone_number
                if phone in accepted or phone in existing:
                    duplicates += 1
                    reason = self.duplicate_reason(phone, existing.get(phone), accepted.get(phone))
                    rejections.append(self.rejection(outcome, reason, duplicate=True))
                    continue
                row_number = outcome.row_number
                accepted[phone] = row_number
                telecaller_id = ids[position]
                position = (position + 1) % len(ids)
                per_telecaller[telecaller_id] += 1
                if self.postgres:
                    leads.append(f"{copy_prefix}{telecaller_id},{row_number},{outcome.copy_values}")
                else:
                    row = (self.branch_id, self.import_id, "new", now, now, telecaller_id, row_number)
                    leads.append((*row, *values))
            distribution = dict(lead_import.distribution or {})
            for telecaller_id, count in per_telecaller.items():
                key = str(telecaller_id)
                distribution[key] = distribution.get(key, 0) + count

        self.insert(Lead.__table__, LEAD_COLUMNS, leads)
        self.insert(ImportRejection.__table__, REJECTION_COLUMNS, rejections)
        advance_cursor(self.branch_id, len(leads))
        lead_import.checkpoint_row = batch[-1].row_number
        lead_import.processed_rows += len(batch)
        lead_import.successful_rows += len(leads)
        lead_import.failed_rows += invalid
        lead_import.duplicate_rows += duplicates
        lead_import.distribution = distribution
        db.session.commit()
        self.lead_import = lead_import
        self.recent.append((cursor, accepted))

    def rejection(self, outcome: RowOutcome, reasons: str, *, duplicate: bool) -> tuple:
        cells = json.dumps(outcome.cells, ensure_ascii=False) if self.postgres else outcome.cells
        return (self.import_id, outcome.row_number, duplicate, reasons, cells)

    def duplicate_reason(self, phone: str, existing: tuple | None, earlier_row: int | None) -> str:
        if earlier_row is not None or existing is None:
            return f"duplicate: phone {phone} is also on row {earlier_row} of this file"
        import_id, source_row = existing
        if import_id == self.import_id and source_row is not None:
            return f"duplicate: phone {phone} is also on row {source_row} of this file"
        return f"duplicate: phone {phone} is already a lead of this branch"

    def known_leads(
        self, batch: Sequence[RowOutcome], lookup: Lookup | None, cursor: int
    ) -> dict[str, tuple[int | None, int | None]]:
        """phone -> (import_id, source_row) of the branch's leads with a phone of the batch, now (the
        branch row locked): the look-ahead plus this import's commits since, or a lookup now."""
        if lookup is not None:
            since = [(before, phones) for before, phones in self.recent if before >= lookup.cursor]
            # All of this import's commits since the snapshot are remembered (the deque reaches back past
            # it), and they account for every move of the cursor: no other import committed meanwhile.
            complete = len(self.recent) < (self.recent.maxlen or 0) or len(self.recent) > len(since)
            if complete and cursor == lookup.cursor + sum(len(phones) for _, phones in since):
                known = dict(lookup.existing)
                for _, phones in since:
                    # Only the batch's own phones matter: a C-level intersection, not a merge of every
                    # phone committed since (tens of thousands of tuples for each batch).
                    for phone in phones.keys() & lookup.phones:
                        known[phone] = (self.import_id, phones[phone])
                return known
        phones = {o.result.phone_number for o in batch if isinstance(o.result, tuple)}
        return find_leads(db.session, self.branch_id, phones, postgres=self.postgres)

    def insert(self, table: sa.Table, columns: Sequence[str], rows: list) -> None:
        """Insert rows in the current transaction: on PostgreSQL by COPY (CSV format; rows are tuples or
        lines already rendered), elsewhere by executemany (rows are tuples)."""
        if not rows:
            return
        if self.postgres:
            if not isinstance(rows[0], str):
                text = io.StringIO()
                csv.writer(text, lineterminator="\n").writerows(rows)
                rows = [text.getvalue()]
            raw = db.session.connection().connection.driver_connection  # psycopg 3, same transaction
            statement = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN (FORMAT csv)"
            with raw.cursor() as cursor, cursor.copy(statement) as copy:
                copy.write("".join(rows))
        else:
            db.session.execute(table.insert(), [dict(zip(columns, row, strict=True)) for row in rows])


def take_write_lock(branch_id: int) -> None:
    """SQLite: begin the batch's transaction with the database's write lock, held to its commit.

    SQLite ignores FOR UPDATE, and its driver begins a transaction only at the first write: the phones
    would be looked up outside it, and another import's batch could commit the same phones before this
    one's insert (a UNIQUE failure, then a retry). A write first (an UPDATE that changes nothing) waits
    for the lock (busy_timeout) and holds it, so the lookup sees every lead committed before and no
    other lead can be committed until this batch is: one batch of the database at a time, as the
    branch row's lock makes it one batch of the branch at a time on PostgreSQL.
    """
    db.session.execute(sa.update(Branch).where(Branch.id == branch_id).values(lead_cursor=Branch.lead_cursor))


def find_leads(connection, branch_id: int, phones: Iterable[str], *, postgres: bool) -> dict:
    """phone -> (import_id, source_row) of the branch's leads that have one of phones (connection: a
    session or a Connection)."""
    phones = sorted(phones)  # probes in index order: neighbouring pages, fewer cache misses
    if not phones:
        return {}
    if postgres:
        # One array parameter, however many phones, and one probe of the unique index on
        # (branch_id, phone_number) per phone: the cost follows the batch, not the branch's size.
        # (`phone_number = ANY(:phones)` lets the planner, misled by the statistics of a table that an
        # import is filling, scan every lead of the branch for each batch: quadratic. OFFSET 0 keeps
        # the subquery a per-phone lookup.)
        stmt = sa.text(
            "SELECT l.phone_number, l.import_id, l.source_row "
            "FROM unnest(CAST(:phones AS varchar[])) AS p(phone) CROSS JOIN LATERAL ("
            "  SELECT phone_number, import_id, source_row FROM leads"
            "  WHERE branch_id = :branch_id AND phone_number = p.phone OFFSET 0"
            ") AS l"
        )
        rows = connection.execute(stmt, {"branch_id": branch_id, "phones": phones})
        return {phone: (import_id, row) for phone, import_id, row in rows}
    found = {}
    for start in range(0, len(phones), SQLITE_IN_CHUNK):
        chunk = phones[start : start + SQLITE_IN_CHUNK]
        stmt = sa.select(Lead.phone_number, Lead.import_id, Lead.source_row).where(
            Lead.branch_id == branch_id, Lead.phone_number.in_(chunk)
        )
        found.update({phone: (import_id, row) for phone, import_id, row in connection.execute(stmt)})
    return found
