"""Reading an uploaded CSV from storage as text records, streamed: never the whole file in memory.

- The encoding is detected from the first bytes (`detect_encoding`): a BOM decides (UTF-8, or UTF-16 as
  Excel's "Unicode text" writes it); else UTF-8 if the bytes are UTF-8, else Windows-1252. Bytes that
  are not text at all (a ZIP/XLSX, a PDF, NUL bytes outside UTF-16) raise NotCsv.
- The delimiter (comma, semicolon or tab) is sniffed from the header line.
- Parsing is strict: a quote that is opened and never closed is a CsvFormatError naming the row where it
  opened, never a field that silently swallows the rest of the file.

Records are numbered as a spreadsheet numbers rows: the header is row 1, and a record whose quoted field
spans several lines is still one row.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from ..storage import get_storage
from ..storage.base import ObjectNotFound, Storage

#: The bytes the encoding is detected on (the upload route checks the same amount).
SAMPLE_BYTES = 64 * 1024
#: How much text is buffered between storage and the CSV parser.
TEXT_BUFFER = 256 * 1024
DELIMITERS = (",", ";", "\t")

# Signatures of binary formats people upload by mistake, with the name the error gives them.
_SIGNATURES = (
    (b"PK\x03\x04", "a ZIP archive (an .xlsx workbook is one): save it as CSV"),
    (b"PK\x05\x06", "a ZIP archive: save it as CSV"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an old Excel (.xls) or Office document: save it as CSV"),
    (b"%PDF", "a PDF document"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"Rar!", "a RAR archive"),
    (b"7z\xbc\xaf", "a 7-Zip archive"),
)
#: C0 control characters that never appear in text files (tab, LF, FF, CR and ESC-less text excluded).
_BINARY_CONTROLS = frozenset(range(0x00, 0x09)) | {0x0B, 0x0E, 0x0F} | frozenset(range(0x10, 0x1B)) | {0x7F}


class NotCsv(ValueError):
    """The bytes are not CSV text (a binary file, a spreadsheet workbook, a PDF...)."""


class CsvFormatError(ValueError):
    """The text is not well-formed CSV (e.g. a quote never closed); the message says where."""


def detect_encoding(sample: bytes) -> str:
    """The Python codec of a CSV whose first bytes are sample; NotCsv if they are not text.

    UTF-16 is recognised by its BOM (Excel writes one) or, without one, by NULs in every other byte of
    ASCII-range text. A sample cut in the middle of a UTF-8 character still counts as UTF-8.
    """
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    for signature, what in _SIGNATURES:
        if sample.startswith(signature):
            raise NotCsv(f"it is {what}")
    if b"\x00" in sample:
        bom_less = _bom_less_utf16(sample)
        if bom_less:
            return bom_less
        raise NotCsv("it contains NUL bytes, so it is a binary file, not text")
    try:
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=False)
        encoding = "utf-8"
    except UnicodeDecodeError:
        encoding = "cp1252"
        try:
            sample.decode(encoding)
        except UnicodeDecodeError as error:
            raise NotCsv(
                f"byte 0x{sample[error.start]:02x} at offset {error.start} "
                "is neither UTF-8 nor Windows-1252 text"
            ) from None
    controls = sum(1 for byte in sample if byte in _BINARY_CONTROLS)
    if controls > max(8, len(sample) // 100):
        raise NotCsv("it is full of control characters, so it is a binary file, not text")
    return encoding


def _bom_less_utf16(sample: bytes) -> str | None:
    """'utf-16-le'/'utf-16-be' when sample looks like BOM-less UTF-16 (ASCII-range text, one NUL per
    character), else None."""
    pairs = len(sample) // 2
    if pairs < 2:
        return None
    even_nuls = sample[0 : pairs * 2 : 2].count(0)
    odd_nuls = sample[1 : pairs * 2 : 2].count(0)
    for nuls, other, codec in ((odd_nuls, even_nuls, "utf-16-le"), (even_nuls, odd_nuls, "utf-16-be")):
        if nuls >= pairs * 0.6 and other == 0:
            try:
                codecs.getincrementaldecoder(codec)().decode(sample[: pairs * 2], final=False)
            except UnicodeDecodeError:
                return None
            return codec
    return None


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
    from it (the encoding sample) put back in front."""

    def __init__(self, head: bytes, source):
        self._head = memoryview(head)
        self._source = source

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
        return len(data)


def read_sample(source, size: int = SAMPLE_BYTES) -> bytes:
    """The first size bytes of source (fewer only at its end: a stream may return short reads)."""
    pieces, wanted = [], size
    while wanted > 0 and (piece := source.read(wanted)):
        pieces.append(piece)
        wanted -= len(piece)
    return b"".join(pieces)


@contextmanager
def open_text(
    key: str, encoding: str | None = None, storage: Storage | None = None
) -> Iterator[tuple[io.TextIOBase, str]]:
    """The stored object as a text stream and its encoding (detected on its first bytes unless given).
    storage defaults to the app's (pass it to read outside an app context).

    ObjectNotFound if the object is missing; NotCsv if it is not text.
    """
    source = (storage or get_storage()).open(key)
    try:
        sample = read_sample(source)
        if encoding is None:
            encoding = detect_encoding(sample)
        buffered = io.BufferedReader(_RawStream(sample, source), buffer_size=TEXT_BUFFER)
        # newline="" hands CR, LF and CRLF to the csv module untouched (it needs them inside quotes).
        yield io.TextIOWrapper(buffered, encoding=encoding, newline=""), encoding
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

    def count_records(self) -> int | None:
        """How many records `records` has left to give, counted by the csv module alone (no Python per
        record: the first pass of an import over a large file), consuming them; None when the text is
        malformed somewhere: read `records` from a fresh open_csv for the error that names the row."""
        try:
            return sum(map(any, self.parser))  # records skips blank rows and rows of empty cells
        except csv.Error:
            return None


@contextmanager
def open_csv(key: str, encoding: str | None = None, storage: Storage | None = None) -> Iterator[CsvFile]:
    """The stored CSV under key, parsed as it streams in.

    Blank lines before the header are skipped (they still count as rows). Raises ObjectNotFound,
    NotCsv, EmptyCsv, and, while the records are read, CsvFormatError and UnicodeDecodeError.
    """
    with open_text(key, encoding, storage) as (text, encoding):
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
        yield CsvFile(encoding, delimiter, header_row, header, records, reader)


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


__all__ = [
    "SAMPLE_BYTES",
    "CsvFile",
    "CsvFormatError",
    "EmptyCsv",
    "NotCsv",
    "ObjectNotFound",
    "detect_encoding",
    "open_csv",
    "open_text",
    "sniff_delimiter",
]
