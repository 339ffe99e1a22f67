"""The import job: a stored CSV becomes leads of a branch, streamed, in batches, exactly once.

    run_import(import_id)
      1. checks: the import exists and is not over, its file is stored (else ImportCancelled);
      2. a first pass over the file (scan): encoding, delimiter, header (a missing required column
         cancels the import, naming it and the headers found), strict parsing of every record (broken
         quoting cancels the import before a single lead is written), whether any row holds bytes that
         are not text (a NUL, a byte the encoding has no character for: those rows are rejected) and
         the number of rows (`total_rows`);
      3. a second pass, row by row, in batches: a reading thread (edcrm.imports.batch_reader) parses
         and validates each row, and each batch is committed in ONE transaction with the import's
         counters and checkpoint (edcrm.imports.batch_writer);
      4. completed, with finished_at; only then is the uploaded file deleted.
    fail_import(import_id, last_error): the job's retries are exhausted; the import is failed.

Exactly once. A batch's leads, its rejected rows, the import's counters and checkpoint, and the branch
cursor are committed together or not at all. A retry or a redelivery (after a crash, a SIGKILL, a lost
worker) reads the file again from the start, skips every row up to checkpoint_row and goes on: rows of
a committed batch are never inserted again, rows of a batch that did not commit are inserted exactly
once, and the rotation resumes at the same telecaller. The file is immutable and parsing deterministic,
so row numbers mean the same on every run. The unique constraint on leads (import_id, source_row)
turns any slip in this reasoning into a failed batch, never a duplicate. A second run of the same
import overlapping the first (a redelivery while the first worker still lives) finds, under the import
row's lock, a checkpoint past its batch and stops, leaving the work to the first.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from flask import current_app

from .. import tuning
from ..extensions import db
from ..jobs import Unrecoverable
from ..models import ImportStatus, LeadImport
from ..models.lead_import import FINAL_STATUSES
from ..models.types import utcnow
from ..storage import ObjectNotFound, get_storage
from .batch_reader import BatchReader, Reading
from .batch_writer import BatchWriter, ImportSuperseded
from .encoding import NotCsv, utf8_evidence
from .headers import MissingColumns, map_columns
from .reader import CsvFormatError, open_csv
from .table_writers import table_writer

log = logging.getLogger(__name__)


class ImportCancelled(Unrecoverable):
    """The import cannot succeed however often it is tried (its file is gone, is not CSV, lacks a
    required column...): it ends cancelled, message in its `error`, its file deleted, its job not retried."""

    def __init__(self, message: str, *, source_columns: Sequence[str] | None = None):
        super().__init__(message)
        self.message = message
        self.source_columns = source_columns  # the header found, kept on the import for the admin


def run_import(import_id: int) -> None:
    """Import the CSV of import import_id (see the module's docstring). Unrecoverable (ImportCancelled
    among them) ends the job cancelled; any other error leaves the import running for the job's retry."""
    lead_import = db.session.get(LeadImport, import_id)
    if lead_import is None:
        raise Unrecoverable(f"import {import_id} no longer exists")
    if lead_import.status in FINAL_STATUSES:
        # A redelivery after the final commit: finish the cleanup, if a crash interrupted it.
        delete_upload(lead_import)
        if lead_import.status == ImportStatus.COMPLETED:
            return
        raise Unrecoverable(f"import {import_id} is already {lead_import.status.value}")
    try:
        _run(lead_import)
    except ImportCancelled as cancelled:
        cancel(import_id, cancelled)
        raise


def _run(lead_import: LeadImport) -> None:
    if not lead_import.storage_key:
        raise ImportCancelled("The uploaded file is gone; upload it again.")
    if lead_import.status == ImportStatus.QUEUED:
        lead_import.status = ImportStatus.RUNNING
        lead_import.started_at = utcnow()
        db.session.commit()
    try:
        reading = scan(lead_import)
        import_rows(lead_import, reading)
    except ObjectNotFound:
        raise ImportCancelled("The uploaded file is missing from storage; upload it again.") from None
    except ImportSuperseded as error:
        db.session.rollback()
        log.warning("import %s: %s", lead_import.id, error)
        return
    complete(lead_import)


def scan(lead_import: LeadImport) -> Reading:
    """The first pass: check the header and every record, count the rows; how to read them.

    ImportCancelled on a file that is not CSV text, has no header, lacks a required column or is
    malformed anywhere, before any lead is written. A byte that is not text in the file's encoding, or a
    NUL, makes its row rejected, with a reason naming it, and the rest is imported: a file is never
    decoded another way once its text proved an encoding. (Only a file whose first 64 KiB are plain
    ASCII, which prove nothing, and whose later bytes fail UTF-8 without UTF-8 characters outnumbering
    them is read as Windows-1252.)
    """
    key = lead_import.storage_key
    assert key is not None  # checked by run_import
    encoding, lenient, sample_ascii = None, False, False
    while True:
        try:
            with open_csv(key, encoding, lenient=lenient) as csv_file:
                encoding, sample_ascii = csv_file.encoding, csv_file.sample_ascii
                try:
                    map_columns(csv_file.header)
                except MissingColumns as error:
                    raise ImportCancelled(str(error), source_columns=csv_file.header) from None
                total = csv_file.count_records()
                damaged = lenient or csv_file.nul_seen
            if total is None:  # malformed somewhere: parse again, row by row, for the row to name
                with open_csv(key, encoding, lenient=lenient) as csv_file:
                    sum(1 for _ in csv_file.records)  # raises CsvFormatError
                raise ImportCancelled("The file is not valid CSV. Nothing was imported.")
        except NotCsv as error:
            raise ImportCancelled(f"The file is not CSV text: {error}.") from None
        except CsvFormatError as error:
            raise ImportCancelled(f"{error} Nothing was imported.") from None
        except UnicodeDecodeError as error:
            if lenient:  # escaping never raises; in case it did, say so rather than loop
                raise ImportCancelled(f"The file is not valid {encoding} text ({error.reason}).") from None
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
    return Reading(csv_file.encoding, lenient, damaged)


def import_rows(lead_import: LeadImport, reading: Reading) -> None:
    """The second pass: every row after the import's checkpoint, batch by batch (BatchWriter), with the
    interpreter tuned for it outside the web process (edcrm.tuning)."""
    if not lead_import.telecaller_ids:
        raise ImportCancelled("The import has no telecallers to assign leads to.")
    assert lead_import.storage_key is not None  # checked by run_import
    tables = table_writer(db.engine)
    with tuning.tuned(enabled=tuning.allowed(current_app.config)) as gate:
        reader = BatchReader(
            get_storage(),
            lead_import.storage_key,
            reading,
            after_row=lead_import.checkpoint_row,
            gate=gate,
            writer=tables,
            branch_id=lead_import.branch_id,
        )
        writer = BatchWriter(lead_import, gate, tables)
        with reader:
            for batch in reader:
                writer.commit_batch(batch)


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


def cancel(import_id: int, cancelled: ImportCancelled) -> None:
    """End the import cancelled with the exception's message, then delete its file (whatever the
    session held is rolled back first: the cancel is a transaction of its own)."""
    db.session.rollback()
    lead_import = db.session.get(LeadImport, import_id, populate_existing=True)
    if lead_import is None or lead_import.status in FINAL_STATUSES:
        return
    if cancelled.source_columns is not None:
        lead_import.source_columns = list(cancelled.source_columns)
    lead_import.status = ImportStatus.CANCELLED
    lead_import.error = cancelled.message
    lead_import.finished_at = utcnow()
    db.session.commit()
    delete_upload(lead_import)


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
