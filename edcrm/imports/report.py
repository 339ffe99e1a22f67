"""The error report of an import: its rejected rows as CSV, streamed from the database in row order.

    row_number,reasons,<the file's own columns…>

Any cell a spreadsheet would run as a formula (starting with = + - @, a tab or a carriage return) is
prefixed with a single quote, as OWASP advises against CSV injection.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator

import sqlalchemy as sa

from ..extensions import db
from ..models import ImportRejection, LeadImport

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
#: Rejected rows fetched from the database at a time (and lines sent per piece of the response).
FETCH_ROWS = 2000


def neutralise(cell: str) -> str:
    """cell, made inert for spreadsheets: a leading formula character gets a ' in front."""
    return "'" + cell if cell.startswith(FORMULA_TRIGGERS) else cell


def iter_error_report(lead_import: LeadImport) -> Iterator[bytes]:
    """The report's UTF-8 bytes, a header then a piece per FETCH_ROWS rejected rows; memory stays flat
    however many rows were rejected (the rows come from a server-side cursor)."""
    import_id = lead_import.id
    header = ["row_number", "reasons", *(lead_import.source_columns or [])]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([neutralise(cell) for cell in header])
    yield _take(buffer)

    stmt = (
        sa.select(ImportRejection.row_number, ImportRejection.reasons, ImportRejection.cells)
        .where(ImportRejection.import_id == import_id)
        .order_by(ImportRejection.row_number)
        .execution_options(yield_per=FETCH_ROWS)
    )
    for partition in db.session.execute(stmt).partitions():
        writer.writerows(_lines(partition))
        yield _take(buffer)


def _lines(rows: Iterable) -> Iterator[list[str]]:
    for row_number, reasons, cells in rows:
        yield [str(row_number), neutralise(reasons), *(neutralise(cell) for cell in cells)]


def _take(buffer: io.StringIO) -> bytes:
    data = buffer.getvalue().encode("utf-8")
    buffer.seek(0)
    buffer.truncate()
    return data
