"""`flask edcrm import-csv FILE --branch NAME --telecallers EMAIL,EMAIL [--wait]`."""

from __future__ import annotations

import csv
import io

import pytest
import sqlalchemy as sa

from edcrm.cli import imports as imports_cli
from edcrm.extensions import db
from edcrm.models import Branch, ImportStatus, Lead, LeadImport, Role
from tests.support.imports import (
    DUPLICATE_ROW,
    INVALID_ROW,
    SAMPLE_CSV,
    csv_bytes,
    queued_messages,
    stored_files,
)
from tests.support.people import make_user


@pytest.fixture
def callers(branch):
    return [make_user(branch, Role.TELECALLER, email=f"caller{n}@kochi.test") for n in (1, 2)]


@pytest.fixture
def leads_csv(tmp_path):
    path = tmp_path / "leads.csv"
    path.write_bytes(SAMPLE_CSV)
    return path


def run(runner, *args):
    return runner.invoke(args=["edcrm", "import-csv", *map(str, args)])


def emails(callers) -> str:
    return ",".join(c.email for c in callers)


def test_it_imports_waits_with_a_progress_bar_and_prints_a_summary(
    runner, branch, callers, leads_csv, stub_broker
):
    result = run(runner, leads_csv, "--branch", "Kochi", "--telecallers", emails(callers), "--wait")

    assert result.exit_code == 0, result.output
    [lead_import] = db.session.execute(sa.select(LeadImport)).scalars().all()
    assert f"import {lead_import.id} queued (job {lead_import.job_id})" in result.output
    assert "Importing leads.csv" in result.output  # the progress bar's label
    assert f"import {lead_import.id} completed: 8 rows, 6 imported, 1 invalid, 1 duplicates" in result.output
    assert "leads per telecaller:\n  caller1@kochi.test: 3\n  caller2@kochi.test: 3" in result.output
    assert lead_import.created_by_id is None  # an operator's import, no admin behind it
    leads = db.session.execute(sa.select(Lead).where(Lead.branch_id == branch.id)).scalars().all()
    assert len(leads) == 6


def test_it_writes_the_error_report(runner, branch, callers, leads_csv, tmp_path, stub_broker):
    report = tmp_path / "rejected.csv"

    result = run(
        runner,
        leads_csv,
        "--branch",
        "Kochi",
        "--telecallers",
        emails(callers),
        "--wait",
        "--errors-to",
        report,
    )

    assert result.exit_code == 0, result.output
    assert f"error report written to {report}" in result.output
    rows = list(csv.reader(io.StringIO(report.read_text(encoding="utf-8-sig"))))
    assert [row[2:] for row in rows[1:]] == [INVALID_ROW.split(","), DUPLICATE_ROW.split(",")]


def test_an_import_that_does_not_complete_exits_1(runner, branch, callers, tmp_path, stub_broker):
    path = tmp_path / "no-phone.csv"
    path.write_bytes(csv_bytes(["Asha,Kochi"], header="name,city\n"))

    result = run(runner, path, "--branch", "Kochi", "--telecallers", emails(callers), "--wait")

    assert result.exit_code == 1, result.output
    assert "cancelled" in result.output and "phone" in result.output
    db.session.expire_all()
    assert db.session.execute(sa.select(LeadImport.status)).scalar_one() == ImportStatus.CANCELLED


def test_without_wait_on_a_worker_broker_it_only_queues(
    runner, branch, callers, leads_csv, stub_broker, monkeypatch
):
    # With REDIS_URL set, workers elsewhere run the job: the command returns once it is queued.
    monkeypatch.setattr(imports_cli, "is_in_memory", lambda broker=None: False)

    result = run(runner, leads_csv, "--branch", "Kochi", "--telecallers", emails(callers))

    assert result.exit_code == 0, result.output
    [lead_import] = db.session.execute(sa.select(LeadImport)).scalars().all()
    assert result.output == f"import {lead_import.id} queued (job {lead_import.job_id})\n"
    assert [m.message_id for m in queued_messages(stub_broker)] == [lead_import.job_id]
    assert lead_import.status == ImportStatus.QUEUED


def test_telecallers_that_cannot_take_leads_are_named(app, runner, branch, callers, leads_csv):
    make_user(branch, Role.TELECALLER, email="idle@kochi.test", active=False)
    elsewhere = Branch(name="Thrissur")
    db.session.add(elsewhere)
    db.session.commit()
    make_user(elsewhere, Role.TELECALLER, email="caller@thrissur.test")

    result = run(
        runner,
        leads_csv,
        "--branch",
        "Kochi",
        "--telecallers",
        f"{callers[0].email},idle@kochi.test,caller@thrissur.test,ghost@kochi.test",
    )

    assert result.exit_code == 2
    assert "idle@kochi.test (deactivated)" in result.output
    assert "caller@thrissur.test (not a telecaller of Kochi)" in result.output
    assert "ghost@kochi.test (no such user)" in result.output
    assert db.session.execute(sa.select(LeadImport)).first() is None and stored_files(app) == []


def test_an_unknown_branch_is_named(runner, branch, callers, leads_csv):
    result = run(runner, leads_csv, "--branch", "Nowhere", "--telecallers", emails(callers))

    assert result.exit_code == 2 and "no branch named 'Nowhere'" in result.output


def test_a_file_that_is_not_csv_is_refused(app, runner, branch, callers, tmp_path, stub_broker):
    path = tmp_path / "photo.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)

    result = run(runner, path, "--branch", "Kochi", "--telecallers", emails(callers), "--wait")

    assert result.exit_code == 1 and "not CSV" in result.output
    assert db.session.execute(sa.select(LeadImport)).first() is None and stored_files(app) == []
