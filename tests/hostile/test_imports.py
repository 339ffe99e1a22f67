"""Lead imports against a real gunicorn (embedded mode: SQLite, in-process workers): files with mixed
encodings and NUL bytes, two overlapping files at once, and the error report as a spreadsheet opens it.

Each test uses phones of its own (the server and its demo branch are shared by the module).
"""

from __future__ import annotations

import csv
import io
import threading
import time
from collections import Counter

from tests.support.server import wait_until

HEADER = ["Name", "Phone", "Email", "City"]


def csv_bytes(rows, header=HEADER) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows([header, *rows])
    return out.getvalue().encode()


def filler(prefix: str, count: int, start: int = 0) -> list[list[str]]:
    """count ASCII rows with the phones prefix + 5 digits (3,000 of them fill the first 64 KiB)."""
    return [[f"Student {n}", f"{prefix}{n:05d}", "", "Kochi"] for n in range(start, start + count)]


def post_import(server, data: bytes, filename: str = "leads.csv") -> dict:
    response = server.api(
        "POST",
        "/api/imports",
        who=server.admin,
        files={"file": (filename, data, "text/csv")},
        data={"telecaller_ids": [str(t["id"]) for t in server.telecallers]},
    )
    assert response.status_code == 202, response.text
    return response.json()


def finished(server, import_id: int, *, timeout: float = 60) -> dict:
    def done():
        body = server.api("GET", f"/api/imports/{import_id}", who=server.admin).json()
        return body if body["status"] not in ("queued", "running") else None

    return wait_until(done, timeout=timeout, what=f"import {import_id} to finish")


def error_report(server, import_id: int) -> tuple[bytes, list[list[str]]]:
    response = server.api("GET", f"/api/imports/{import_id}/errors.csv", who=server.admin)
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/csv")
    return response.content, list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"), newline="")))


def branch_leads(server, phone_prefix: str) -> dict[str, list[str]]:
    """phone -> the names of the demo branch's leads with that phone (GET /api/leads, every page)."""
    found: dict[str, list[str]] = {}
    cursor = None
    while True:
        params = {"limit": 500, **({"cursor": cursor} if cursor else {})}
        page = server.api("GET", "/api/leads", who=server.admin, params=params).json()
        for lead in page["items"]:
            if lead["phone_number"].startswith(f"+91{phone_prefix}"):
                found.setdefault(lead["phone_number"], []).append(lead["student_name"])
        cursor = page["next"]
        if not cursor:
            return found


def test_a_mixed_encoding_file_keeps_its_names_and_reports_the_bad_row(server):
    """UTF-8 with `Ünïcode` in its first 64 KiB and one Windows-1252 row after: the names come out
    right, and the one bad row is rejected with its row number and why."""
    head = csv_bytes([["Ünïcode Nair", "9710000001", "", "Kōchi"], *filler("97110", 3000)])
    bad = "Zoë Café,9710000002,,Kochi\r\n".encode("cp1252")
    tail = "Tomás Müller,9710000003,,Thrissur\r\n".encode()
    assert len(head) > 64 * 1024

    lead_import = finished(server, post_import(server, head + bad + tail)["id"])

    assert lead_import["status"] == "completed", lead_import["error"]
    assert (lead_import["successful_rows"], lead_import["failed_rows"]) == (3002, 1)
    leads = branch_leads(server, "9710")
    assert leads["+919710000001"] == ["Ünïcode Nair"]
    assert leads["+919710000003"] == ["Tomás Müller"]
    assert "+919710000002" not in leads
    _, rows = error_report(server, lead_import["id"])
    assert rows[1:] == [
        [
            "3003",
            "Name has bytes that are not UTF-8 text (0xE9 0xEB): check this row's encoding",
            "Zo\ufffd Caf\ufffd",
            "9710000002",
            "",
            "Kochi",
        ]
    ]


def test_nul_bytes_reject_their_rows_wherever_they_are(server):
    """A NUL in the first 64 KiB (the upload's sample) and one after it are the same thing: each
    rejects its own row, named in the report; the file is not refused as binary, the rest imports."""
    rows = [
        ["Asha\x00Nair", "9720000001", "", "Kochi"],
        *filler("97210", 3000),
        ["Ravi", "9720000002", "", "Ko\x00chi"],
        ["Meera", "9720000003", "", "Kochi"],
    ]
    data = csv_bytes(rows)
    assert data.index(b"\x00") < 64 * 1024 < data.rindex(b"\x00")

    lead_import = finished(server, post_import(server, data)["id"])

    assert lead_import["status"] == "completed", lead_import["error"]
    assert (lead_import["successful_rows"], lead_import["failed_rows"]) == (3001, 2)
    _, report = error_report(server, lead_import["id"])
    assert [row[:2] for row in report[1:]] == [
        ["2", "Name contains a NUL byte (0x00), which is not text"],
        ["3003", "City contains a NUL byte (0x00), which is not text"],
    ]
    assert branch_leads(server, "9720")["+919720000003"] == ["Meera"]


def test_two_overlapping_files_posted_at_once_both_complete_with_every_phone_once(server):
    """Two files sharing 12,000 phones, posted together: both complete within seconds, their jobs never
    `retrying`, each phone a lead once, the shared ones reported as duplicates of the other import."""
    first = [[f"A {n}", f"973{n:07d}", "", ""] for n in range(24_000)]
    second = [[f"B {n}", f"973{n:07d}", "", ""] for n in range(12_000, 36_000)]
    posted: list[dict] = [{}, {}]

    def post(index: int, rows) -> None:
        posted[index] = post_import(server, csv_bytes(rows), filename=f"part{index}.csv")

    threads = [threading.Thread(target=post, args=(i, rows)) for i, rows in enumerate((first, second))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert all(posted), posted

    states: set[str] = set()

    def both_finished():
        for body in posted:
            states.add(server.api("GET", f"/api/jobs/{body['job_id']}", who=server.admin).json()["state"])
        imports = [server.api("GET", f"/api/imports/{b['id']}", who=server.admin).json() for b in posted]
        return imports if all(i["status"] not in ("queued", "running") for i in imports) else None

    started = time.monotonic()
    imports = wait_until(both_finished, timeout=60, what="both imports to finish")
    took = time.monotonic() - started

    assert [i["status"] for i in imports] == ["completed", "completed"], [i["error"] for i in imports]
    assert "retrying" not in states, states
    assert took < 25, f"the imports took {took:.1f} s"  # generous: a loaded 2-core machine
    assert sum(i["successful_rows"] for i in imports) == 36_000
    assert sum(i["duplicate_rows"] for i in imports) == 12_000
    leads = branch_leads(server, "973")
    assert len(leads) == 36_000 and Counter(map(len, leads.values())) == {1: 36_000}
    for lead_import in imports:
        if lead_import["duplicate_rows"]:
            _, report = error_report(server, lead_import["id"])
            assert report[1][1].endswith("is already a lead of this branch"), report[1]


def test_the_error_report_opens_in_a_spreadsheet_as_text(server):
    """Downloaded over HTTP: a UTF-8 BOM first (Excel shows `José`), and no cell that a spreadsheet
    would run as a formula, after a `;` or `,` inside it or after leading spaces either."""
    rows = [
        ["José", "123", "x;=1+1", "Kochi"],
        ["Asha", "456", " =1+1", "a, @SUM(A1)"],
        ["Ravi", "9740000001", "", "Kochi"],
    ]
    lead_import = finished(server, post_import(server, csv_bytes(rows))["id"])

    raw, report = error_report(server, lead_import["id"])

    assert raw.startswith(b"\xef\xbb\xbfrow_number,reasons,Name,Phone,Email,City\r\n")
    assert [row[2:] for row in report[1:]] == [
        ["José", "123", "x;'=1+1", "Kochi"],
        ["Asha", "456", "' =1+1", "a,' @SUM(A1)"],
    ]
