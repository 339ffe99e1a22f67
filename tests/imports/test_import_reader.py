"""Reading uploaded CSVs: encoding detection, delimiter sniffing, strict parsing and row numbers."""

from __future__ import annotations

import codecs
import io

import pytest

from edcrm.imports.encoding import NotCsv, detect_encoding, row_damage, utf8_evidence
from edcrm.imports.reader import CsvFormatError, EmptyCsv, open_csv, sniff_delimiter
from edcrm.storage import ObjectNotFound, get_storage

TEXT = "name,phone,city\r\nJosé,9847012301,Kōchi\r\n"


@pytest.mark.parametrize(
    ("data", "encoding"),
    [
        (TEXT.encode("ascii", "replace"), "utf-8"),
        (TEXT.encode("utf-8"), "utf-8"),
        (codecs.BOM_UTF8 + TEXT.encode("utf-8"), "utf-8-sig"),
        (TEXT.encode("utf-16"), "utf-16"),  # with its BOM, as Excel writes it
        (codecs.BOM_UTF16_BE + TEXT.encode("utf-16-be"), "utf-16"),
        (TEXT.encode("utf-16-le"), "utf-16-le"),  # no BOM: recognised by its NULs
        (TEXT.encode("utf-16-be"), "utf-16-be"),
        ("name,city\r\nJosé,Zürich \u2013 €\r\n".encode("cp1252"), "cp1252"),
    ],
)
def test_detect_encoding(data, encoding):
    assert detect_encoding(data) == encoding


def test_a_sample_cut_inside_a_utf8_character_is_still_utf8():
    data = ("é" * 100).encode("utf-8")
    assert detect_encoding(data[:-1]) == "utf-8"


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"PK\x03\x04\x14\x00\x06\x00" + bytes(100), "a ZIP archive (an .xlsx workbook is one)"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "a PDF document"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(100), "an old Excel (.xls)"),
        (b"\x89PNG\r\n\x1a\n" + bytes(50), "a PNG image"),
        (b"name,phone\n" + bytes([0, 1, 2, 3, 200, 0, 0, 7]) * 20, "NUL bytes"),
        (bytes(range(1, 9)) * 100, "control characters"),
        (b"name\x81,\x8d\x8f\x90\x9d", "neither UTF-8 nor Windows-1252"),
    ],
)
def test_detect_encoding_refuses_binary_files_saying_what_they_are(data, says):
    with pytest.raises(NotCsv, match=says.replace("(", r"\(").replace(")", r"\)")):
        detect_encoding(data)


@pytest.mark.parametrize(
    ("line", "delimiter"),
    [
        ("name,phone,email\r\n", ","),
        ("name;phone;email\r\n", ";"),
        ("name\tphone\temail\r\n", "\t"),
        ('"last, first";phone;email\n', ";"),  # commas inside quotes do not count
        ("name\n", ","),
    ],
)
def test_sniff_delimiter(line, delimiter):
    assert sniff_delimiter(line) == delimiter


def read(app, data: bytes, encoding=None, lenient=False):
    with app.app_context():
        get_storage().save("imports/t/file.csv", io.BytesIO(data))
        with open_csv("imports/t/file.csv", encoding, lenient=lenient) as csv_file:
            return csv_file, list(csv_file.records)


def test_records_are_numbered_as_a_spreadsheet_numbers_rows(app):
    data = b'\r\nname,phone\r\n"A\r\nB",1\r\n\r\n,\r\nC,2\r\n"D ""x""",3'
    csv_file, records = read(app, data)

    assert (csv_file.header_row, csv_file.header) == (2, ["name", "phone"])
    assert records == [(3, ["A\r\nB", "1"]), (6, ["C", "2"]), (7, ['D "x"', "3"])]


def test_an_unterminated_quote_is_an_error_naming_where_it_opened_not_a_swallowed_file(app):
    rows = "".join(f"Name {n},98470{n:05d}\n" for n in range(200))
    data = f'name,phone\n{rows}"Broken,1\n{rows}'.encode()

    with pytest.raises(
        CsvFormatError, match=r"^Row 202 \(line 202\) opens a quoted field that is never closed"
    ):
        read(app, data)


def test_an_unterminated_quote_swallowing_a_huge_rest_stops_at_the_field_limit(app):
    data = b'name,phone\n"Broken,1\n' + b"x,1\n" * 100_000

    with pytest.raises(CsvFormatError, match=r"^Row 2 \(line 2\) opens a quoted field"):
        read(app, data)


def test_an_empty_file_has_no_header(app):
    with pytest.raises(EmptyCsv, match="no header row"):
        read(app, b"")
    with pytest.raises(EmptyCsv):
        read(app, b"\n\r\n  \n")


def test_a_missing_object(app):
    with app.app_context(), pytest.raises(ObjectNotFound), open_csv("imports/none/there.csv"):
        pass


def test_a_large_file_streams_in_small_reads(app, monkeypatch):
    """Storage is read block by block: the biggest single read is a block, not the file."""
    data = b"name,phone\n" + b"Someone,9847012301\n" * 200_000  # ~3.8 MB
    sizes = []
    with app.app_context():
        storage = get_storage()
        storage.save("imports/t/big.csv", io.BytesIO(data))
        real_open = type(storage).open

        def spy_open(self, key):
            stream = real_open(self, key)
            real_read = stream.read

            def read(size=-1):
                sizes.append(size)
                return real_read(size)

            stream.read = read
            return stream

        monkeypatch.setattr(type(storage), "open", spy_open)
        with open_csv("imports/t/big.csv") as csv_file:
            count = sum(1 for _ in csv_file.records)

    assert count == 200_000
    assert sizes and all(0 < size <= 256 * 1024 for size in sizes)


def test_a_stray_nul_in_a_text_sample_is_a_damaged_row_not_a_binary_file():
    assert detect_encoding(b"name,phone\nAsha\x00Nair,9847012301\nRavi,9847012302\n") == "utf-8"


@pytest.mark.parametrize("offset", [10, 64 * 1024 - 1, 64 * 1024, 64 * 1024 + 256 * 1024 - 1, 400_000])
def test_a_nul_is_seen_wherever_it_is_even_across_two_reads(app, offset):
    data = bytearray(b"name,phone\n" + b"Someone,9847012301\n" * 30_000)
    data[offset] = 0
    with app.app_context():
        get_storage().save("imports/t/nul.csv", io.BytesIO(bytes(data)))
        with open_csv("imports/t/nul.csv") as csv_file:
            assert not csv_file.nul_seen or offset < 64 * 1024  # the sample is watched at once
            csv_file.count_records()
            assert csv_file.nul_seen


def test_a_clean_file_is_not_seen_as_holding_a_nul(app):
    _, records = read(app, "name,phone\nJosé,1\n".encode("utf-16"))
    assert records == [(2, ["José", "1"])]
    with app.app_context(), open_csv("imports/t/file.csv") as csv_file:
        csv_file.count_records()
        assert not csv_file.nul_seen


def test_lenient_reading_escapes_bad_bytes_and_row_damage_names_their_column(app):
    data = "name,phone,city\nÖk,1,Kōchi\n".encode() + b"Bad\xe9,2,K\x00\n"
    with pytest.raises(UnicodeDecodeError):
        read(app, data)
    csv_file, records = read(app, data, lenient=True)

    assert records[0] == (2, ["Ök", "1", "Kōchi"])
    cells = records[1][1]
    assert row_damage(cells, csv_file.header, csv_file.encoding) == [
        "name has bytes that are not UTF-8 text (0xE9): check this row's encoding",
        "city contains a NUL byte (0x00), which is not text",
    ]
    assert cells == ["Bad\ufffd", "2", "K\ufffd"]
    assert row_damage(["Ok", "1"], csv_file.header, csv_file.encoding) == []


def test_utf8_evidence_tells_a_utf8_file_from_a_windows_1252_one(app):
    with app.app_context():
        storage = get_storage()
        storage.save("imports/t/a.csv", io.BytesIO("name\nZoë Café\n".encode("cp1252")))
        storage.save("imports/t/b.csv", io.BytesIO(b"name\n" + b"x" * 300_000 + "Zoë\n".encode()))
        assert not utf8_evidence("imports/t/a.csv")
        assert utf8_evidence("imports/t/b.csv")


def test_a_utf8_sample_with_one_stray_byte_is_still_utf8_not_windows_1252():
    sample = "name,city\nÜnïcode,Kōchi\nJosé,Zürich\n".encode() + b"Caf\xe9,Kochi\n"
    assert detect_encoding(sample) == "utf-8"
    assert detect_encoding("name\nZoë Café\nJosé Müller\n".encode("cp1252")) == "cp1252"
