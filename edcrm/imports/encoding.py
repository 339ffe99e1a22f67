"""What text an uploaded CSV's bytes are: their encoding, and the rows whose bytes are not text.

- The encoding is detected from the first bytes (`detect_encoding`): a BOM decides (UTF-8, or UTF-16 as
  Excel's "Unicode text" writes it); else UTF-8 if the bytes are UTF-8 (or UTF-8 characters outnumber
  the bytes that are not: a UTF-8 file with a damaged row), else Windows-1252. Bytes that are not text
  at all (a ZIP/XLSX, a PDF, a run of NUL or control bytes outside UTF-16) raise NotCsv.
- Damaged text is never decoded another way behind the admin's back: decoded with the ESCAPE error
  handler, a byte that is not text in the file's encoding reaches the parser as a lone surrogate
  (U+DC00 + the byte), which no valid decoding produces, and `row_damage` names the cells holding one,
  or a NUL.
"""

from __future__ import annotations

import codecs
import re

from ..storage import get_storage
from ..storage.base import Storage

#: The bytes the encoding is detected on (the upload route checks the same amount).
SAMPLE_BYTES = 64 * 1024
#: How much of a stored object utf8_evidence reads at a time.
READ_BYTES = 256 * 1024

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


#: The decoding error handler of lenient reading: each undecodable byte becomes U+DC00 + the byte.
ESCAPE = "edcrm-escape"
#: A character a cell of text never holds: NUL, or an escaped undecodable byte.
_DAMAGE = re.compile("[\x00\udc00-\udcff]")
# A multi-byte UTF-8 character (RFC 3629: no overlong forms, no surrogates), for utf8_evidence.
_UTF8_MULTIBYTE = re.compile(
    rb"[\xc2-\xdf][\x80-\xbf]|\xe0[\xa0-\xbf][\x80-\xbf]|[\xe1-\xec\xee\xef][\x80-\xbf]{2}"
    rb"|\xed[\x80-\x9f][\x80-\xbf]|\xf0[\x90-\xbf][\x80-\xbf]{2}|[\xf1-\xf3][\x80-\xbf]{3}"
    rb"|\xf4[\x80-\x8f][\x80-\xbf]{2}"
)
_ENCODING_NAMES = {"utf-8": "UTF-8", "utf-8-sig": "UTF-8", "cp1252": "Windows-1252"}


def _utf8_votes(data: bytes) -> int:
    """Multi-byte UTF-8 characters in data, less its byte sequences that are not UTF-8: above 0 for
    UTF-8 text with a few damaged bytes, at most 0 for Windows-1252 text (whose accented letters are
    almost never followed by what UTF-8 would need)."""
    valid = len(_UTF8_MULTIBYTE.findall(data))
    invalid = data.decode("utf-8", "replace").count("\ufffd") - data.count(b"\xef\xbf\xbd")
    return valid - invalid


def _escape(error: UnicodeError) -> tuple[str, int]:
    if not isinstance(error, UnicodeDecodeError):
        raise error
    bad = error.object[error.start : error.end]
    return "".join(chr(0xDC00 + byte) for byte in bad), error.end


codecs.register_error(ESCAPE, _escape)


class NotCsv(ValueError):
    """The bytes are not CSV text (a binary file, a spreadsheet workbook, a PDF...)."""


def detect_encoding(sample: bytes) -> str:
    """The Python codec of a CSV whose first bytes are sample; NotCsv if they are not text.

    UTF-16 is recognised by its BOM (Excel writes one) or, without one, by NULs in every other byte of
    ASCII-range text. A sample cut in the middle of a UTF-8 character still counts as UTF-8, and so
    does one whose UTF-8 characters outnumber its bytes that are not UTF-8 (their rows are rejected
    when read). A stray NUL is a damaged row too; only many NUL or control bytes make a binary file.
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
    try:
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=False)
        encoding = "utf-8"
    except UnicodeDecodeError:
        # UTF-8 characters outnumbering the bytes that are not: UTF-8 with damaged rows (read as
        # Windows-1252, its names would come out as mojibake); else Windows-1252.
        encoding = "utf-8" if _utf8_votes(sample) > 0 else "cp1252"
    if encoding == "cp1252":
        try:
            sample.decode(encoding)
        except UnicodeDecodeError as error:
            raise NotCsv(
                f"byte 0x{sample[error.start]:02x} at offset {error.start} "
                "is neither UTF-8 nor Windows-1252 text"
            ) from None
    # A stray NUL or control byte is a damaged row (rejected when read, wherever it is in the file);
    # many of them make a binary file.
    controls = sum(1 for byte in sample if byte in _BINARY_CONTROLS)
    if controls > max(8, len(sample) // 100):
        if b"\x00" in sample:
            raise NotCsv("it contains NUL bytes, so it is a binary file, not text")
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


def utf8_evidence(key: str, storage: Storage | None = None) -> bool:
    """Whether the stored object, whose bytes are not all UTF-8, is UTF-8 text with damaged rows rather
    than Windows-1252 text: its UTF-8 characters outnumber its byte sequences that are not UTF-8."""
    source = (storage or get_storage()).open(key)
    try:
        votes, carry = 0, b""
        while piece := source.read(READ_BYTES):
            data = carry + piece
            cut = _last_character(data)  # a character cut between two pieces is counted whole, after
            votes += _utf8_votes(data[:cut])
            carry = data[cut:]
        votes += _utf8_votes(carry)
        return votes > 0
    finally:
        source.close()


def _last_character(data: bytes) -> int:
    """Where the last UTF-8 character of data starts when it may be cut short (a lead byte among the
    last four, with nothing ASCII after it), else len(data)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:
            break
        if byte >= 0xC0:
            return len(data) - back
    return len(data)


def row_damage(cells: list[str], header: list[str], encoding: str) -> list[str]:
    """Why the cells are not clean text (empty when they are), naming each damaged cell's column; the
    damaged cells are made printable in place (U+FFFD where a NUL or an undecodable byte was), so that
    the row can be stored and shown in the error report."""
    reasons = []
    for index, cell in enumerate(cells):
        found = _DAMAGE.findall(cell)
        if not found:
            continue
        column = header[index] if index < len(header) and header[index] else f"column {index + 1}"
        if "\x00" in found:
            reasons.append(f"{column} contains a NUL byte (0x00), which is not text")
        escaped = sorted({ord(char) - 0xDC00 for char in found if char != "\x00"})
        if escaped:
            name = _ENCODING_NAMES.get(encoding, encoding.upper())
            shown = " ".join(f"0x{byte:02X}" for byte in escaped[:4])
            reasons.append(
                f"{column} has bytes that are not {name} text ({shown}): check this row's encoding"
            )
        cells[index] = _DAMAGE.sub("\ufffd", cell)
    return reasons


def printable(cells: list[str]) -> list[str]:
    """cells with any NUL or undecodable byte shown as U+FFFD (a header read leniently)."""
    return [_DAMAGE.sub("\ufffd", cell) for cell in cells]
