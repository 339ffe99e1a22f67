"""The import's second pass over its file: rows read, parsed and validated in a thread of their own,
handed over in batches.

While the database works on one batch (COPY, index updates, commit), the job's thread waits without
holding the GIL, so the reading thread prepares the next: the import takes about as long as the longer
of the two instead of their sum. It stays at most READ_AHEAD batches ahead (memory: about READ_AHEAD + 2
batches), pauses while the job's thread runs Python (the import's CpuGate, edcrm.tuning), and hands
over an error it meets to be raised in the job's thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from ..storage import Storage
from ..tuning import CpuGate
from .encoding import row_damage
from .headers import map_columns
from .lookup import Lookup
from .reader import open_csv
from .table_writers import TableWriter
from .validation import LeadValues, RowValidator

#: Rows validated, checked and inserted per transaction (and between two progress updates).
BATCH_ROWS = 8_000
#: Validated batches the reading thread may hold ready.
READ_AHEAD = 2


@dataclass(frozen=True)
class Reading:
    """How the second pass reads the file, as the first pass found it."""

    encoding: str
    lenient: bool = False  # bytes that are not text in the encoding are escaped, not raised
    damaged: bool = False  # rows may hold NULs or escaped bytes: each row is checked (row_damage)


@dataclass(slots=True)
class RowOutcome:
    row_number: int
    cells: list[str]
    result: LeadValues | list[str]  # the lead's values, or why the row is invalid
    copy_values: str | None = None  # the values as the table writer renders them (PostgreSQL: COPY)


class Batch(list):
    """Rows of one transaction, in file order, and the reading thread's Lookup of their phones."""

    lookup: Lookup | None = None

    def phones(self) -> set[str]:
        return {o.result.phone_number for o in self if isinstance(o.result, LeadValues)}


class BatchReader:
    """Reads the rows after a checkpoint in a thread of its own, at most READ_AHEAD batches ahead of
    the transactions that commit them (see the module's docstring)."""

    _END = object()

    def __init__(
        self,
        storage: Storage,
        key: str,
        reading: Reading,
        *,
        after_row: int,
        gate: CpuGate,
        writer: TableWriter,
        branch_id: int,
    ):
        self.storage, self.key, self.reading, self.after_row = storage, key, reading, after_row
        self.cpu = gate
        self.writer, self.branch_id = writer, branch_id
        self.batches: queue.Queue = queue.Queue(maxsize=READ_AHEAD)
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
                render = self.writer.renderer()
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
        """batch, with its phones looked up among the branch's leads now, if the writer looks ahead."""
        if self.writer.looks_ahead:
            batch.lookup = self.writer.look_ahead(self.branch_id, batch.phones())
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
