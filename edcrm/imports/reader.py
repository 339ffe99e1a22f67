"""Reading an uploaded CSV from storage as text records, streamed: never the whole file in memory.

- The encoding is detected from the first bytes, unless given (edcrm.imports.encoding). Opened
  `lenient`, a byte that is not text in the file's encoding is escaped for `row_damage` to name, not
  raised; a file is read strictly first (its speed), and only a file that turns out damaged pays for
  the checks.
- The delimiter (comma, semicolon or tab) is sniffed from the header line.
- Parsing is strict: a quote that is opened and never closed is a CsvFormatError naming the row where it
  opened, never a field that silently swallows the rest of the file.

Records are numbered as a spreadsheet numbers rows: the header is row 1, and a record whose quoted field
spans several lines is still one row.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from ..storage import get_storage
from ..storage.base import Storage
from .encoding import ESCAPE, SAMPLE_BYTES, NotCsv, detect_encoding, printable

#: How much text is buffered between storage and the CSV parser.
TEXT_BUFFER = 256 * 1024
DELIMITERS = (",", ";", "\t")


class CsvFormatError(ValueError):
    """The text is not well-formed CSV (e.g. a quote never closed); the message says where."""


def sniff_delimiter(header_line: str) -> str:
    """The delimiter of a CSV whose first line is header_line: the most frequent of comma, semicolon and
    tab outside quotes (comma when none occurs: a one-column file)."""
    counts = dict.fromkeys(DELIMITERS, 0)
    quoted = False
    for char in header_line:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in counts:
            counts[char] += 1
    best = max(DELIMITERS, key=lambda d: counts[d])  # ties keep the order of DELIMITERS
    return best if counts[best] else ","


class _StrictDialect(csv.Dialect):
    delimiter = ","
    quotechar = '"'
    doublequote = True
    skipinitialspace = False
    lineterminator = "\n"
    quoting = csv.QUOTE_MINIMAL
    strict = True


class _RawStream(io.RawIOBase):
    """Any object with read(n) (a file, botocore's StreamingBody) as a raw stream, with bytes already read
    from it (the encoding sample) put back in front.

    It notes whether the bytes may hold a NUL character (`nul_seen`): one search per buffer, in C, so
    that a clean file is never checked row by row. (In UTF-16 two zero bytes; they may also straddle two
    characters, which only costs that file the row-by-row check.)"""

    def __init__(self, head: bytes, source, nul: bytes = b"\x00"):
        self._head = memoryview(head)
        self._source = source
        self._nul = nul
        self.nul_seen = nul in head
        self._tail = head[-1:]  # the end of the bytes watched so far, for a NUL split across two reads

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self._head:
            size = min(len(buffer), len(self._head))
            buffer[:size] = self._head[:size]
            self._head = self._head[size:]
            return size
        data = self._source.read(len(buffer))
        buffer[: len(data)] = data
        if data and not self.nul_seen:
            self.nul_seen = self._nul in data or self._nul in self._tail + data[:1]
            self._tail = data[-1:]
        return len(data)


def read_sample(source, size: int = SAMPLE_BYTES) -> bytes:
    """The first size bytes of source (fewer only at its end: a stream may return short reads)."""
    pieces, wanted = [], size
    while wanted > 0 and (piece := source.read(wanted)):
        pieces.append(piece)
        wanted -= len(piece)
    return b"".join(pieces)


@dataclass
class OpenText:
    """A stored object open as text: the stream, its encoding, and what its bytes showed so far."""

    text: io.TextIOBase
    encoding: str
    raw: _RawStream
    sample: bytes

    @property
    def nul_seen(self) -> bool:
        """Whether the bytes read so far may hold a NUL character."""
        return self.raw.nul_seen


@contextmanager
def open_text(
    key: str, encoding: str | None = None, storage: Storage | None = None, *, lenient: bool = False
) -> Iterator[OpenText]:
    """The stored object as text (its encoding detected on its first bytes unless given). storage
    defaults to the app's (pass it to read outside an app context). Strict decoding raises
    UnicodeDecodeError at a byte that is not text; lenient decoding escapes it (see ESCAPE).

    ObjectNotFound if the object is missing; NotCsv if it is not text.
    """
    source = (storage or get_storage()).open(key)
    try:
        sample = read_sample(source)
        if encoding is None:
            encoding = detect_encoding(sample)
        raw = _RawStream(sample, source, b"\x00\x00" if encoding.startswith("utf-16") else b"\x00")
        buffered = io.BufferedReader(raw, buffer_size=TEXT_BUFFER)
        # newline="" hands CR, LF and CRLF to the csv module untouched (it needs them inside quotes).
        errors = ESCAPE if lenient else "strict"
        text = io.TextIOWrapper(buffered, encoding=encoding, errors=errors, newline="")
        yield OpenText(text, encoding, raw, sample)
    finally:
        source.close()


class EmptyCsv(CsvFormatError):
    """The file has no header row (it is empty, or blank lines only)."""


@dataclass
class CsvFile:
    """An open CSV: its format, its header (and the header's row number) and its data records."""

    encoding: str
    delimiter: str
    header_row: int
    header: list[str]
    records: Iterator[tuple[int, list[str]]]
    parser: Iterator[list[str]] | None = None  # the csv reader under records
    source: OpenText | None = None

    @property
    def nul_seen(self) -> bool:
        """Whether the bytes read so far may hold a NUL character (then check rows with row_damage)."""
        return self.source is not None and self.source.nul_seen

    @property
    def sample_ascii(self) -> bool:
        """Whether the first bytes, the encoding was detected on, are all ASCII (so prove nothing)."""
        return self.source is not None and self.source.sample.isascii()

    def count_records(self) -> int | None:
        """How many records `records` has left to give, counted by the csv module alone (no Python per
        record: the first pass of an import over a large file), consuming them; None when the text is
        malformed somewhere: read `records` from a fresh open_csv for the error that names the row."""
        assert self.parser is not None  # open_csv sets it
        try:
            return sum(map(any, self.parser))  # records skips blank rows and rows of empty cells
        except csv.Error:
            return None


@contextmanager
def open_csv(
    key: str, encoding: str | None = None, storage: Storage | None = None, *, lenient: bool = False
) -> Iterator[CsvFile]:
    """The stored CSV under key, parsed as it streams in (decoded leniently or not, see open_text).

    Blank lines before the header are skipped (they still count as rows). Raises ObjectNotFound,
    NotCsv, EmptyCsv, and, while the records are read, CsvFormatError and (strict) UnicodeDecodeError.
    """
    with open_text(key, encoding, storage, lenient=lenient) as source:
        text, encoding = source.text, source.encoding
        blank_lines = 0
        for first_line in text:
            if first_line.strip():
                break
            blank_lines += 1
        else:
            raise EmptyCsv("The file is empty: it has no header row.")
        delimiter = sniff_delimiter(first_line)
        reader = csv.reader(itertools.chain([first_line], text), _StrictDialect, delimiter=delimiter)
        records = _records(reader, first_row=blank_lines + 1, line_offset=blank_lines)
        header_row, header = next(records)
        yield CsvFile(encoding, delimiter, header_row, printable(header), records, reader, source)


def _records(reader, *, first_row: int, line_offset: int) -> Iterator[tuple[int, list[str]]]:
    """(row number, cells) of every record that is not blank; rows are numbered from first_row, a blank
    line or a row of empty cells counting as a row (a spreadsheet shows it), a multi-line quoted field
    not adding any. CsvFormatError names the row and the line where a malformed record began."""
    row = first_row - 1
    while True:
        start_line = reader.line_num + 1 + line_offset
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            raise _format_error(error, row + 1, start_line) from None
        row += 1
        if any(cells):
            yield row, cells


def _format_error(error: csv.Error, row: int, start_line: int) -> CsvFormatError:
    reason = str(error)
    if "unexpected end of data" in reason or "field larger than field limit" in reason:
        return CsvFormatError(
            f"Row {row} (line {start_line}) opens a quoted field that is never closed: "
            'check that row for a stray double quote (").'
        )
    return CsvFormatError(f"Row {row} (line {start_line}) is not valid CSV ({reason}).")


# NotCsv and detect_encoding belong to edcrm.imports.encoding; the upload's check imports them from here.
__all__ = [
    "CsvFile",
    "CsvFormatError",
    "EmptyCsv",
    "NotCsv",
    "detect_encoding",
    "open_csv",
    "open_text",
    "sniff_delimiter",
]
