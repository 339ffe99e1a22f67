"""The error report of an import: its rejected rows as CSV, streamed from the database in row order.

    row_number,reasons,<the file's own columns…>

The file starts with a UTF-8 byte order mark, so that Excel reads it as UTF-8 (`José`, not `JosÃ©`).

Any cell a spreadsheet would run as a formula is made inert with a single quote, as OWASP advises
against CSV injection: in front of a cell starting with = + - @, a tab or a carriage return, also after
leading spaces or tabs (` =1+1`), and in front of such a character after a `;`, `,`, tab or line break
inside a cell (`x;=1+1`), where a spreadsheet that splits cells on it (a `;` list separator, "text to
columns") would start a new cell.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator

import sqlalchemy as sa

from ..extensions import db
from ..models import ImportRejection, LeadImport

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
BOM = "\ufeff"
#: Rejected rows fetched from the database at a time (and lines sent per piece of the response).
FETCH_ROWS = 2000

# A formula character at the start of a cell after spaces or tabs (the quote goes first)...
_LEADING = re.compile(r"[ \t]*[=+\-@\t\r]")
# ...or after a character that some spreadsheet splits cells on (the quote goes after that character).
_INSIDE = re.compile(r"(?<=[;,\t\r\n])(?=[ \t]*[=+\-@\t\r])")
_ANY_TRIGGER = re.compile(r"[=+\-@\t\r]")


def neutralise(cell: str) -> str:
    """cell, made inert for spreadsheets (see the module's docstring)."""
    if _ANY_TRIGGER.search(cell) is None:  # most cells: one scan, nothing to do
        return cell
    cell = _INSIDE.sub("'", cell)
    return "'" + cell if _LEADING.match(cell) else cell


def iter_error_report(lead_import: LeadImport) -> Iterator[bytes]:
    """The report's UTF-8 bytes, a BOM and the header then a piece per FETCH_ROWS rejected rows; memory
    stays flat however many rows were rejected (the rows come from a server-side cursor)."""
    import_id = lead_import.id
    header = ["row_number", "reasons", *(lead_import.source_columns or [])]
    buffer = io.StringIO()
    buffer.write(BOM)
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
