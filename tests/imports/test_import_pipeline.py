"""The import actor end to end on SQLite and the StubBroker: encodings, delimiters, broken files,
duplicates, round-robin across imports, the error report, retries and the uploaded file's lifetime."""

from __future__ import annotations

import codecs
import csv
import io

import dramatiq
import pytest
import sqlalchemy as sa

from edcrm.extensions import db
from edcrm.imports import batch_reader, batch_writer, lifecycle
from edcrm.imports.report import iter_error_report
from edcrm.models import Branch, ImportRejection, ImportStatus, Job, JobState, Lead, LeadImport
from edcrm.routes.api.serializers import import_record
from edcrm.storage import get_storage
from tests.support.import_race import force_overlapping_batches
from tests.support.imports import queue_import
from tests.support.jobs import run_jobs, stop_worker

HEADER = ["Name", "Phone", "Email", "City"]
ROWS = [
    ["Asha Nair", "9847012301", "asha@example.com", "Kochi"],
    ["Rahul Menon", "+91 98470 12302", "", "Thrissur"],
    ["Fathima K", "098470-12303", "fathima@example.com", "Kochi"],
    ["Arjun Das", "919847012304", "", "Aluva"],
]
E164 = ["+919847012301", "+919847012302", "+919847012303", "+919847012304"]


def csv_text(rows, header=HEADER, delimiter=",", newline="\r\n") -> str:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator=newline)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


@pytest.fixture
def stub_worker(stub_broker):
    """A worker that run_jobs starts, not the fixture: between queueing an import and running its job, a
    test may delete the file or the import, or patch the pipeline, without racing the worker."""
    worker = dramatiq.Worker(stub_broker, worker_timeout=50)
    yield worker
    if worker.consumers:
        stop_worker(stub_broker, worker)


def import_file(branch, data: bytes, telecallers, stub_broker, stub_worker) -> LeadImport:
    import_id = queue_import(branch, data, telecallers)
    run_jobs(stub_broker, stub_worker, "csv_import")
    db.session.expire_all()
    return db.session.get(LeadImport, import_id)


def leads_of(import_id: int) -> list[Lead]:
    return list(
        db.session.execute(sa.select(Lead).filter_by(import_id=import_id).order_by(Lead.source_row)).scalars()
    )


def report_rows(lead_import: LeadImport) -> list[list[str]]:
    data = b"".join(iter_error_report(lead_import)).decode("utf-8-sig")
    return list(csv.reader(io.StringIO(data, newline="")))


def job_of(lead_import: LeadImport) -> Job:
    return db.session.get(Job, lead_import.job_id)


# -- the happy path and the formats --------------------------------------------------------------------------


def test_an_import_creates_normalised_leads_round_robin_and_completes(
    app, branch, callers, stub_broker, stub_worker
):
    lead_import = import_file(branch, csv_text(ROWS).encode(), callers, stub_broker, stub_worker)

    assert lead_import.status == ImportStatus.COMPLETED
    assert lead_import.error is None
    assert (lead_import.total_rows, lead_import.processed_rows, lead_import.successful_rows) == (4, 4, 4)
    assert (lead_import.failed_rows, lead_import.duplicate_rows) == (0, 0)
    assert lead_import.started_at is not None and lead_import.finished_at is not None
    leads = leads_of(lead_import.id)
    assert [lead.phone_number for lead in leads] == E164
    assert [lead.source_row for lead in leads] == [2, 3, 4, 5]
    assert [lead.student_name for lead in leads] == [row[0] for row in ROWS]
    assert [lead.email for lead in leads] == ["asha@example.com", None, "fathima@example.com", None]
    assert all(lead.branch_id == branch.id and lead.assigned_at is not None for lead in leads)
    ids = sorted(c.id for c in callers)
    assert [lead.telecaller_id for lead in leads] == [ids[0], ids[1], ids[2], ids[0]]
    assert lead_import.distribution == {str(ids[0]): 2, str(ids[1]): 1, str(ids[2]): 1}
    assert job_of(lead_import).state == JobState.SUCCEEDED


def test_to_dict_is_the_contract_shape_but_errors_url(app, branch, callers, stub_broker, stub_worker):
    lead_import = import_file(branch, csv_text(ROWS[:1]).encode(), callers[:1], stub_broker, stub_worker)

    data = import_record(lead_import)
    assert set(data) == {
        "id", "filename", "status", "total_rows", "processed_rows", "successful_rows", "failed_rows",
        "duplicate_rows", "distribution", "error", "created_at", "finished_at",
    }  # fmt: skip
    assert data["status"] == "completed"
    assert data["distribution"] == {str(callers[0].id): 1}
    assert data["finished_at"].endswith("Z")


@pytest.mark.parametrize(
    ("encoding", "delimiter"),
    [
        ("utf-8", ","),
        ("utf-8-sig", ","),  # Excel's "CSV UTF-8"
        ("utf-16", "\t"),  # Excel's "Unicode text": UTF-16 LE with a BOM, tab-delimited
        ("utf-16-be", "\t"),
        ("cp1252", ";"),  # Excel on a European Windows: Windows-1252 and semicolons
        ("utf-8", "\t"),
        ("utf-8", ";"),
    ],
)
def test_each_encoding_and_delimiter_imports_the_same_leads(
    app, branch, callers, stub_broker, stub_worker, encoding, delimiter
):
    rows = [[*ROWS[0][:3], "Kōchi" if encoding != "cp1252" else "Kochi"], ["José Müller", *ROWS[1][1:]]]
    data = csv_text(rows, delimiter=delimiter).encode(encoding)
    if encoding == "utf-16-be":
        data = codecs.BOM_UTF16_BE + data

    lead_import = import_file(branch, data, callers, stub_broker, stub_worker)

    assert lead_import.status == ImportStatus.COMPLETED, lead_import.error
    leads = leads_of(lead_import.id)
    assert [(lead.student_name, lead.phone_number, lead.city) for lead in leads] == [
        ("Asha Nair", E164[0], rows[0][3]),
        ("José Müller", E164[1], "Thrissur"),
    ]


def test_a_utf8_file_with_windows_1252_after_the_first_64_kib_is_read_as_windows_1252(
    app, branch, callers, stub_broker, stub_worker
):
    filler = [[f"Student {n}", f"98{n:08d}", "", "Kochi"] for n in range(3000)]  # > 64 KiB of ASCII
    data = csv_text([*filler, ["Zoë Café", "9847012399", "", "Kochi"]]).encode("cp1252")
    assert len(data) > 64 * 1024

    lead_import = import_file(branch, data, callers, stub_broker, stub_worker)

    assert lead_import.status == ImportStatus.COMPLETED, lead_import.error
    last = db.session.execute(sa.select(Lead).filter_by(phone_number="+919847012399")).scalar_one()
    assert last.student_name == "Zoë Café"


def filler_rows(count: int, start: int = 0) -> list[list[str]]:
    """count ASCII rows with distinct phones (3,000 of them pass the 64 KiB the encoding is detected on)."""
    return [[f"Student {n}", f"98{n:08d}", "", "Kochi"] for n in range(start, start + count)]


@pytest.mark.parametrize("where", ["after the first 64 KiB", "in the first 64 KiB"])
def test_a_utf8_file_with_an_invalid_byte_keeps_its_names_and_rejects_that_row_only(
    app, branch, callers, stub_broker, stub_worker, where
):
    head = csv_text([["Ünïcode Nair", "9847012301", "", "Kōchi"], *filler_rows(3000)]).encode()
    bad = "Zoë Café,9847012398,,Kochi\r\n".encode("cp1252")  # one stray Windows-1252 row: 0xEB, 0xE9
    tail = "Tomás Müller,9847012399,,Thrissur\r\n".encode()
    if where.startswith("in"):
        head = head[: head.index(b"Student 100,")] + bad + head[head.index(b"Student 100,") :]
    else:
        head += bad
    assert (head.index(b"Caf\xe9") < 64 * 1024) == where.startswith("in")

    lead_import = import_file(branch, head + tail, callers, stub_broker, stub_worker)

    assert lead_import.status == ImportStatus.COMPLETED, lead_import.error
    assert (lead_import.total_rows, lead_import.successful_rows, lead_import.failed_rows) == (3003, 3002, 1)
    names = {lead.phone_number: lead.student_name for lead in leads_of(lead_import.id)}
    assert names["+919847012301"] == "Ünïcode Nair"
    assert names["+919847012399"] == "Tomás Müller"
    assert "+919847012398" not in names
    assert report_rows(lead_import)[1:] == [
        [
            "103" if where.startswith("in") else "3003",
            "Name has bytes that are not UTF-8 text (0xE9 0xEB): check this row's encoding",
            "Zo\ufffd Caf\ufffd",
            "9847012398",
            "",
            "Kochi",
        ]
    ]


@pytest.mark.parametrize("where", ["in the first 64 KiB", "after the first 64 KiB"])
def test_a_nul_byte_rejects_its_row_wherever_it_is(app, branch, callers, stub_broker, stub_worker, where):
    nul_row = ["Asha\x00Nair", "9847012301", "", "Kochi"]
    rows = [nul_row, *filler_rows(3000)] if where.startswith("in") else [*filler_rows(3000), nul_row]
    data = csv_text(rows).encode()
    assert (data.index(b"\x00") < 64 * 1024) == where.startswith("in")

    lead_import = import_file(branch, data, callers, stub_broker, stub_worker)

    assert lead_import.status == ImportStatus.COMPLETED, lead_import.error
    assert (lead_import.successful_rows, lead_import.failed_rows) == (3000, 1)
    row = "2" if where.startswith("in") else "3002"
    reason = "Name contains a NUL byte (0x00), which is not text"
    assert report_rows(lead_import)[1:] == [[row, reason, "Asha\ufffdNair", "9847012301", "", "Kochi"]]
    assert "+919847012301" not in {lead.phone_number for lead in leads_of(lead_import.id)}


def test_a_windows_1252_file_with_an_undefined_byte_rejects_that_row_and_imports_the_rest(
    app, branch, callers, stub_broker, stub_worker
):
    data = csv_text([["José Müller", "9847012301", "", "Kochi"], *filler_rows(3000)]).encode("cp1252")
    data += b"Bad\x81Byte,9847012302,,Kochi\r\n"  # 0x81: no character in Windows-1252

    lead_import = import_file(branch, data, callers, stub_broker, stub_worker)

    assert lead_import.status == ImportStatus.COMPLETED, lead_import.error
    assert leads_of(lead_import.id)[0].student_name == "José Müller"
    assert lead_import.failed_rows == 1
    assert report_rows(lead_import)[1][:2] == [
        "3003",
        "Name has bytes that are not Windows-1252 text (0x81): check this row's encoding",
    ]


def test_header_aliases_match_whatever_their_case_and_spacing(app, branch, callers, stub_broker, stub_worker):
    header = [
        "  STUDENT NAME ",
        "Mobile",
        "E-mail",
        "preferred_course",
        "Preferred University",
        "City",
        "Source",
    ]
    rows = [["Asha Nair", "9847012301", "x", "B.Tech", "KTU", "Kochi", "Fair"]]

    lead_import = import_file(
        branch, csv_text(rows, header=header).encode(), callers, stub_broker, stub_worker
    )

    assert lead_import.status == ImportStatus.COMPLETED
    (lead,) = leads_of(lead_import.id)
    assert (lead.student_name, lead.phone_number) == ("Asha Nair", E164[0])
    assert (lead.course, lead.university, lead.city, lead.source) == ("B.Tech", "KTU", "Kochi", "Fair")
    assert lead.email is None  # "E-mail" is not an alias of email: the column is ignored


def test_quoted_fields_with_delimiters_and_newlines_keep_their_row_numbers(
    app, branch, callers, stub_broker, stub_worker
):
    data = (
        b'name,phone,city\r\n"Nair, Asha",9847012301,"Kochi\r\nKerala"\r\n\r\n'
        b'Bad Row,123,Kochi\r\n"Rahul ""RM"" Menon",9847012302,Thrissur\r\n'
    )

    lead_import = import_file(branch, data, callers, stub_broker, stub_worker)

    assert lead_import.status == ImportStatus.COMPLETED
    assert [(lead.source_row, lead.student_name, lead.city) for lead in leads_of(lead_import.id)] == [
        (2, "Nair, Asha", "Kochi\r\nKerala"),
        (5, 'Rahul "RM" Menon', "Thrissur"),
    ]
    assert [row[0] for row in report_rows(lead_import)[1:]] == ["4"]  # the blank row 3 is still a row
    assert lead_import.total_rows == 3


# -- files that cannot be imported -----------------------------------------------------------------------


def test_an_unterminated_quote_cancels_the_import_naming_its_row_and_imports_nothing(
    app, branch, callers, stub_broker, stub_worker
):
    rows = [[f"Student {n}", f"98470{n:05d}", "", "Kochi"] for n in range(50)]
    text = csv_text(rows) + '"Broken, 9847099999,,Kochi\r\n' + csv_text(rows[:5], header=["x"] * 4)

    lead_import = import_file(branch, text.encode(), callers, stub_broker, stub_worker)

    assert lead_import.status == ImportStatus.CANCELLED
    assert lead_import.error.startswith("Row 52 (line 52) opens a quoted field that is never closed")
    assert "Nothing was imported" in lead_import.error
    assert leads_of(lead_import.id) == []
    assert job_of(lead_import).state == JobState.CANCELLED
    assert job_of(lead_import).attempts == 1  # unrecoverable: no retry


def test_text_after_a_closing_quote_is_a_clear_error(app, branch, callers, stub_broker, stub_worker):
    data = b'name,phone\r\nAsha,9847012301\r\n"Rahul" Menon,9847012302\r\n'

    lead_import = import_file(branch, data, callers, stub_broker, stub_worker)

    assert lead_import.status == ImportStatus.CANCELLED
    assert lead_import.error.startswith("Row 3 (line 3) is not valid CSV")
    assert leads_of(lead_import.id) == []


def test_a_missing_required_column_cancels_naming_it_and_the_headers_found(
    app, branch, callers, stub_broker, stub_worker
):
    data = csv_text([["Asha", "asha@example.com"]], header=["Student Name", "Email"]).encode()
    import_id = queue_import(branch, data, callers)
    key = db.session.get(LeadImport, import_id).storage_key
    run_jobs(stub_broker, stub_worker, "csv_import")
    db.session.expire_all()
    lead_import = db.session.get(LeadImport, import_id)

    assert lead_import.status == ImportStatus.CANCELLED
    assert lead_import.error == (
        "The file has no required column phone (a column headed 'phone', 'phone_number', 'phone number', "
        "'mobile'). Headers found: 'Student Name', 'Email'."
    )
    assert lead_import.finished_at is not None
    assert job_of(lead_import).state == JobState.CANCELLED
    assert not get_storage().exists(key)
    assert lead_import.storage_key is None


def test_an_empty_file_is_cancelled_and_a_header_only_file_completes_with_no_rows(
    app, branch, callers, stub_broker, stub_worker
):
    empty = import_file(branch, b"", callers, stub_broker, stub_worker)
    blank = import_file(branch, b"\r\n\r\n", callers, stub_broker, stub_worker)
    header_only = import_file(branch, b"name,phone\r\n", callers, stub_broker, stub_worker)

    assert empty.status == ImportStatus.CANCELLED
    assert empty.error == "The file is empty: it has no header row. Nothing was imported."
    assert blank.status == ImportStatus.CANCELLED
    assert header_only.status == ImportStatus.COMPLETED
    assert (header_only.total_rows, header_only.processed_rows, header_only.successful_rows) == (0, 0, 0)
    assert report_rows(header_only) == [["row_number", "reasons", "name", "phone"]]


def test_a_binary_file_is_cancelled_as_not_csv(app, branch, callers, stub_broker, stub_worker):
    lead_import = import_file(branch, b"PK\x03\x04" + bytes(200), callers, stub_broker, stub_worker)

    assert lead_import.status == ImportStatus.CANCELLED
    assert lead_import.error.startswith("The file is not CSV text: it is a ZIP archive")


def test_a_missing_file_is_unrecoverable(app, branch, callers, stub_broker, stub_worker):
    import_id = queue_import(branch, csv_text(ROWS).encode(), callers)
    lead_import = db.session.get(LeadImport, import_id)
    get_storage().delete(lead_import.storage_key)
    run_jobs(stub_broker, stub_worker, "csv_import")
    db.session.expire_all()

    assert lead_import.status == ImportStatus.CANCELLED
    assert lead_import.error == "The uploaded file is missing from storage; upload it again."
    assert job_of(lead_import).state == JobState.CANCELLED
    assert job_of(lead_import).attempts == 1


def test_a_deleted_import_is_unrecoverable(app, branch, callers, stub_broker, stub_worker):
    import_id = queue_import(branch, csv_text(ROWS).encode(), callers)
    lead_import = db.session.get(LeadImport, import_id)
    job_id = lead_import.job_id
    db.session.delete(lead_import)
    db.session.commit()
    run_jobs(stub_broker, stub_worker, "csv_import")

    job = db.session.get(Job, job_id)
    assert job.state == JobState.CANCELLED
    assert job.errors[-1].error.endswith(f"import {import_id} no longer exists")
    assert db.session.execute(sa.select(sa.func.count(Lead.id))).scalar_one() == 0


# -- validation and duplicates -------------------------------------------------------------------------------


def test_rejected_rows_keep_their_row_numbers_and_every_reason(
    app, branch, callers, stub_broker, stub_worker
):
    rows = [
        ROWS[0],
        ["", "12345", "not-an-email", "Kochi"],  # row 3: three reasons
        ["Landline", "0484 2345678", "", "Kochi"],  # row 4: an Indian landline
        ["Rahul", "", "rahul@example", "Kochi"],  # row 5
        ROWS[1],
    ]

    lead_import = import_file(branch, csv_text(rows).encode(), callers, stub_broker, stub_worker)

    assert (lead_import.successful_rows, lead_import.failed_rows, lead_import.duplicate_rows) == (2, 3, 0)
    assert report_rows(lead_import)[1:] == [
        ["3", "name is missing; phone '12345' is not a valid phone number; "
              "email 'not-an-email' is not a valid email address", "", "12345", "not-an-email", "Kochi"],
        ["4", "phone '0484 2345678' is not a mobile number (Indian numbers must be mobiles)",
              "Landline", "0484 2345678", "", "Kochi"],
        ["5", "phone is missing; email 'rahul@example' is not a valid email address",
              "Rahul", "", "rahul@example", "Kochi"],
    ]  # fmt: skip


def test_duplicates_in_the_file_and_against_the_branch_are_counted_and_reported(
    app, branch, callers, stub_broker, stub_worker
):
    other_branch = Branch(name="Thrissur")
    db.session.add(other_branch)
    db.session.flush()
    db.session.add(Lead(branch_id=branch.id, student_name="Old", phone_number=E164[2]))
    db.session.add(Lead(branch_id=other_branch.id, student_name="Elsewhere", phone_number=E164[3]))
    db.session.commit()
    rows = [
        ROWS[0],  # row 2
        ["Invalid", "9847012302", "bad-email", ""],  # row 3: invalid, so it claims no phone
        ROWS[1],  # row 4: 9847012302 again, but row 3 was no lead: imported
        ["Asha Again", "+91-98470-12301", "", ""],  # row 5: row 2's phone
        ROWS[2],  # row 6: already a lead of this branch
        ROWS[3],  # row 7: a lead of another branch only: imported
    ]

    lead_import = import_file(branch, csv_text(rows).encode(), callers, stub_broker, stub_worker)

    assert lead_import.status == ImportStatus.COMPLETED
    assert (lead_import.successful_rows, lead_import.failed_rows, lead_import.duplicate_rows) == (3, 1, 2)
    assert [lead.source_row for lead in leads_of(lead_import.id)] == [2, 4, 7]
    assert [row[:2] for row in report_rows(lead_import)[1:]] == [
        ["3", "email 'bad-email' is not a valid email address"],
        ["5", f"duplicate: phone {E164[0]} is also on row 2 of this file"],
        ["6", f"duplicate: phone {E164[2]} is already a lead of this branch"],
    ]
    duplicates = db.session.execute(sa.select(ImportRejection.row_number).filter_by(duplicate=True)).scalars()
    assert list(duplicates) == [5, 6]


def test_a_duplicate_in_a_later_batch_is_found_among_the_committed_leads(
    app, branch, callers, stub_broker, stub_worker, monkeypatch
):
    monkeypatch.setattr(batch_reader, "BATCH_ROWS", 2)
    rows = [ROWS[0], ROWS[1], ROWS[2], ["Asha Again", "9847012301", "", ""], ROWS[0]]

    lead_import = import_file(branch, csv_text(rows).encode(), callers, stub_broker, stub_worker)

    assert (lead_import.successful_rows, lead_import.duplicate_rows) == (3, 2)
    assert [row[:2] for row in report_rows(lead_import)[1:]] == [
        ["5", f"duplicate: phone {E164[0]} is also on row 2 of this file"],
        ["6", f"duplicate: phone {E164[0]} is also on row 2 of this file"],
    ]


def test_two_overlapping_imports_of_one_branch_at_once_both_complete_without_a_retry(
    app, branch, callers, stub_broker, stub_worker, monkeypatch
):
    """The first import's batch has looked its phones up when the second commits leads with some of
    them: the second waits for the first's commit (SQLite's write lock, taken before the lookup), then
    finds those phones taken and reports them as duplicates. No IntegrityError, no retry."""
    first, second = force_overlapping_batches(monkeypatch)
    ids = [queue_import(branch, csv_text(rows).encode(), callers) for rows in (first, second)]
    run_jobs(stub_broker, stub_worker, "csv_import")
    db.session.expire_all()
    imports = [db.session.get(LeadImport, i) for i in ids]

    assert [i.status for i in imports] == [ImportStatus.COMPLETED] * 2, [i.error for i in imports]
    assert [job_of(i).attempts for i in imports] == [1, 1]  # never `retrying`
    # Batches interleave as the lock falls: each phone is a lead of one import, a duplicate of the other.
    assert sum(i.successful_rows for i in imports) == 450
    assert sum(i.duplicate_rows for i in imports) == 150
    phones = db.session.execute(sa.select(Lead.phone_number)).scalars()
    assert sorted(phones) == [f"+9198{n:08d}" for n in range(450)]  # each phone once
    assert report_rows(imports[1])[1][:2] == [
        "2",
        "duplicate: phone +919800000150 is already a lead of this branch",
    ]


# -- the error report ----------------------------------------------------------------------------------------


def test_the_error_report_repeats_the_original_columns_and_neutralises_formulas(
    app, branch, callers, stub_broker, stub_worker
):
    header = ["Name", "Phone", "=Notes"]
    rows = [
        ['=HYPERLINK("http://evil")', "123", "+SUM(A1)"],
        ["@risky", "-5", "\tTabbed"],
        ["Fine, really", "\r12", 'says "hi"'],
        ["Good", "9847012301", "ok"],
    ]
    lead_import = import_file(
        branch, csv_text(rows, header=header).encode(), callers, stub_broker, stub_worker
    )

    report = b"".join(iter_error_report(lead_import)).decode("utf-8")

    assert report == (
        "\ufeffrow_number,reasons,Name,Phone,'=Notes\r\n"
        '2,phone \'123\' is not a valid phone number,"\'=HYPERLINK(""http://evil"")",123,\'+SUM(A1)\r\n'
        "3,phone '-5' is not a phone number,'@risky,'-5,'\tTabbed\r\n"
        '4,phone \'12\' is not a valid phone number,"Fine, really","\'\r12","says ""hi"""\r\n'
    )


def test_the_error_report_starts_with_a_bom_and_neutralises_formulas_after_separators_and_spaces(
    app, branch, callers, stub_broker, stub_worker
):
    rows = [
        ["José", "1", "x;=1+1", "Kochi"],
        ["Asha", "2", " =1+1", "\t @SUM(A1)"],
        ["Ravi", "3", "a, +5", "b\n-2"],
        ["Fine; really, ok", "4", "", "Kochi"],
    ]
    lead_import = import_file(branch, csv_text(rows).encode(), callers, stub_broker, stub_worker)

    report = b"".join(iter_error_report(lead_import))

    assert report.startswith(b"\xef\xbb\xbfrow_number,reasons,")
    cells = [row[2:] for row in report_rows(lead_import)[1:]]
    assert cells == [
        ["José", "1", "x;'=1+1", "Kochi"],
        ["Asha", "2", "' =1+1", "'\t' @SUM(A1)"],
        ["Ravi", "3", "a,' +5", "b\n'-2"],
        ["Fine; really, ok", "4", "", "Kochi"],
    ]


# -- round-robin across imports ---------------------------------------------------------------------------


def test_three_one_lead_imports_over_three_telecallers_give_each_one_lead(
    app, branch, callers, stub_broker, stub_worker
):
    for row in ROWS[:3]:
        lead_import = import_file(branch, csv_text([row]).encode(), callers, stub_broker, stub_worker)
        assert lead_import.successful_rows == 1

    owners = db.session.execute(sa.select(Lead.telecaller_id)).scalars()
    assert sorted(owners) == sorted(c.id for c in callers)
    assert db.session.get(Branch, branch.id).lead_cursor == 3


def test_the_next_import_continues_the_rotation_whatever_the_order_telecallers_were_chosen_in(
    app, branch, callers, stub_broker, stub_worker
):
    first = import_file(branch, csv_text(ROWS[:2]).encode(), callers, stub_broker, stub_worker)
    second = import_file(branch, csv_text(ROWS[2:]).encode(), callers[::-1], stub_broker, stub_worker)

    ids = sorted(c.id for c in callers)
    assert [lead.telecaller_id for lead in leads_of(first.id)] == [ids[0], ids[1]]
    assert [lead.telecaller_id for lead in leads_of(second.id)] == [ids[2], ids[0]]


# -- progress, retries, exactly once, the uploaded file -----------------------------------------------------


def many_rows(count: int, start: int = 0) -> list[list[str]]:
    return [[f"Student {n}", f"98{n:08d}", "", "Kochi"] for n in range(start, start + count)]


def test_processed_rows_grows_batch_by_batch(app, branch, callers, stub_broker, stub_worker, monkeypatch):
    monkeypatch.setattr(batch_reader, "BATCH_ROWS", 4)
    seen = []
    commit_batch = batch_writer.BatchWriter.commit_batch

    def watch(self, batch):
        commit_batch(self, batch)
        with app.app_context():  # what a poller sees, from another session
            seen.append(db.session.get(LeadImport, self.import_id).processed_rows)

    monkeypatch.setattr(batch_writer.BatchWriter, "commit_batch", watch)

    lead_import = import_file(branch, csv_text(many_rows(10)).encode(), callers, stub_broker, stub_worker)

    assert seen == [4, 8, 10]
    assert lead_import.total_rows == 10


class Crash(Exception):
    pass


def test_a_batch_that_fails_before_its_commit_is_redone_exactly_once_by_the_retry(
    app, branch, callers, stub_broker, stub_worker, monkeypatch
):
    """The third batch's leads are written, then the attempt dies before the commit: its retry resumes
    after the second batch, and every valid row becomes exactly one lead."""
    monkeypatch.setattr(batch_reader, "BATCH_ROWS", 3)
    calls = []
    advance = batch_writer.advance_cursor

    def crash_once_in_the_third_batch(branch_id, count):
        calls.append(count)
        advance(branch_id, count)  # the leads and the cursor are written...
        if len(calls) == 3:
            raise Crash("the worker died mid-batch")  # ...but never committed

    monkeypatch.setattr(batch_writer, "advance_cursor", crash_once_in_the_third_batch)
    rows = [*many_rows(10), ["Bad", "123", "", ""], *many_rows(2, start=100), many_rows(1)[0]]

    lead_import = import_file(branch, csv_text(rows).encode(), callers, stub_broker, stub_worker)

    assert lead_import.status == ImportStatus.COMPLETED
    assert job_of(lead_import).attempts == 2
    leads = leads_of(lead_import.id)
    assert [lead.source_row for lead in leads] == [*range(2, 12), 13, 14]
    assert len({lead.phone_number for lead in leads}) == 12
    assert (lead_import.successful_rows, lead_import.failed_rows, lead_import.duplicate_rows) == (12, 1, 1)
    assert lead_import.processed_rows == lead_import.total_rows == 14
    counts = sorted(lead_import.distribution.values())
    assert counts == [4, 4, 4] and sum(counts) == 12
    assert [row[0] for row in report_rows(lead_import)[1:]] == ["12", "15"]
    assert db.session.get(Branch, branch.id).lead_cursor == 12


def test_the_file_outlives_every_failed_attempt_and_is_deleted_when_the_import_fails(
    app, branch, callers, stub_broker, stub_worker, monkeypatch
):
    storage = get_storage()
    file_there = []

    def broken(self, batch):
        file_there.append(storage.exists(key))
        raise Crash("database unreachable")

    monkeypatch.setattr(batch_writer.BatchWriter, "commit_batch", broken)
    import_id = queue_import(branch, csv_text(ROWS).encode(), callers)
    key = db.session.get(LeadImport, import_id).storage_key
    run_jobs(stub_broker, stub_worker, "csv_import")
    db.session.expire_all()
    lead_import = db.session.get(LeadImport, import_id)

    assert file_there == [True, True, True, True]  # 1 + 3 retries, each found the file
    assert lead_import.status == ImportStatus.FAILED
    assert lead_import.error == ("The import failed after its retries: Crash: database unreachable")
    assert lead_import.finished_at is not None
    assert not storage.exists(key)
    assert lead_import.storage_key is None
    assert job_of(lead_import).state == JobState.FAILED


def test_a_redelivered_message_of_a_completed_import_changes_nothing(
    app, branch, callers, stub_broker, stub_worker
):
    lead_import = import_file(branch, csv_text(ROWS).encode(), callers, stub_broker, stub_worker)

    with app.app_context():
        lifecycle.run_import(lead_import.id)  # the same job, delivered again after it finished
    db.session.expire_all()

    assert len(leads_of(lead_import.id)) == 4
    assert lead_import.status == ImportStatus.COMPLETED


def test_a_run_that_another_run_overtook_stops_without_writing(
    app, branch, callers, stub_broker, monkeypatch
):
    """Two deliveries of one import at once: the one that finds the checkpoint past its batch stops."""
    monkeypatch.setattr(batch_reader, "BATCH_ROWS", 2)
    import_id = queue_import(branch, csv_text(ROWS).encode(), callers)
    commit_batch = batch_writer.BatchWriter.commit_batch
    overtaken = []

    def overtake_before_the_second_batch(self, batch):
        if batch[0].row_number == 4 and not overtaken:
            overtaken.append(True)
            with app.app_context():  # the other delivery runs the whole import meanwhile
                lifecycle.run_import(import_id)
        commit_batch(self, batch)

    monkeypatch.setattr(batch_writer.BatchWriter, "commit_batch", overtake_before_the_second_batch)
    with app.app_context():
        lifecycle.run_import(import_id)
    db.session.expire_all()

    lead_import = db.session.get(LeadImport, import_id)
    assert lead_import.status == ImportStatus.COMPLETED
    assert [lead.source_row for lead in leads_of(import_id)] == [2, 3, 4, 5]
    assert lead_import.successful_rows == 4
