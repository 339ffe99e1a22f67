"""Lead imports on a real PostgreSQL: a 100k-row import through COPY, and two imports of one branch at
once (the branch cursor locked, each import balanced, no lead twice)."""

from __future__ import annotations

import csv
import io
import uuid
from collections import Counter

import dramatiq
import pytest
import sqlalchemy as sa

from edcrm import create_app
from edcrm.extensions import db
from edcrm.imports import batch_reader, lookup
from edcrm.imports.report import iter_error_report
from edcrm.jobs import broker_of
from edcrm.jobs.embedded import stop_worker
from edcrm.models import Branch, ImportStatus, Job, Lead, LeadImport, Role, User
from tests.support.import_race import force_overlapping_batches
from tests.support.imports import queue_import
from tests.support.processes import fresh_postgres_database

#: PostgreSQL's limit on the parameters of one statement.
MAX_PARAMETERS = 65_535


@pytest.fixture
def pg_app(postgres_url, tmp_path, monkeypatch):
    with fresh_postgres_database(postgres_url) as url:
        app = create_app(
            {
                "TESTING": True,
                "EDCRM_INSTANCE_PATH": str(tmp_path / "instance"),
                "JOB_MIN_BACKOFF_MS": 10,
                "JOB_MAX_BACKOFF_MS": 40,
                "SECRET_KEY": "test",
                "SQLALCHEMY_DATABASE_URI": url,
                "STORAGE_URL": (tmp_path / "storage").as_uri(),
            }
        )
        with app.app_context():
            db.create_all()
            yield app
            db.session.remove()
            db.engine.dispose()


@pytest.fixture
def worker(pg_app):
    broker = broker_of(pg_app)
    for name in list(broker.queues):
        broker.flush(name)
    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=50)
    worker.start()
    yield broker
    stop_worker(broker, worker)


def telecallers(branch: Branch, count: int) -> list[User]:
    users = [
        User(
            email=f"caller{n}-{uuid.uuid4().hex[:6]}@pg.test",
            role=Role.TELECALLER,
            branch=branch,
            password_hash="x",
        )
        for n in range(count)
    ]
    db.session.add_all(users)
    db.session.commit()
    return users


def rows_csv(rows) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["Student Name", "Mobile", "Email", "City"])
    writer.writerows(rows)
    return out.getvalue().encode()


def wait_all(broker) -> None:
    broker.join("csv_import", timeout=300_000, fail_fast=False)


def test_a_100k_row_import_on_postgresql(pg_app, worker):
    branch = Branch(name=f"Kochi {uuid.uuid4().hex[:6]}")
    db.session.add(branch)
    db.session.commit()
    callers = telecallers(branch, 7)
    db.session.add(Lead(branch_id=branch.id, student_name="Existing", phone_number="+919900000005"))
    db.session.commit()

    rows, expected_rows, invalid, duplicates = [], [], 0, 0
    for n in range(100_000):
        phone = f"99{n:08d}"
        if n % 97 == 0:
            rows.append([f"Bad {n}", phone[:6], "", "Kochi"])  # too short
            invalid += 1
        elif n % 101 == 0:
            rows.append([f"Again {n}", f"+91 {'99'}{(n - 1):08d}", "", "Kochi"])  # the previous row's phone
            duplicates += 1 if (n - 1) % 97 else 0
            if (n - 1) % 97 == 0:
                expected_rows.append(n + 2)  # the previous row was invalid: this one is no duplicate
        else:
            rows.append([f"Student {n}", phone, f"s{n}@example.com", "Kochi"])
            if n == 5:
                duplicates += 1  # already a lead of the branch
            else:
                expected_rows.append(n + 2)

    parameters = []

    @sa.event.listens_for(db.engine, "before_cursor_execute")
    def count_parameters(conn, cursor, statement, params, context, executemany):
        batches = params if executemany else [params]
        parameters.extend(len(p) if p else 0 for p in batches)

    lookups_under_lock = []
    find_leads = lookup.find_leads_postgresql

    def spy(connection, *args, **kwargs):
        if connection is db.session:
            lookups_under_lock.append(args)
        return find_leads(connection, *args, **kwargs)

    lookup.find_leads_postgresql = spy
    try:
        import_id = queue_import(branch, rows_csv(rows), callers)
        wait_all(worker)
    finally:
        lookup.find_leads_postgresql = find_leads
    sa.event.remove(db.engine, "before_cursor_execute", count_parameters)
    db.session.expire_all()
    lead_import = db.session.get(LeadImport, import_id)

    assert lead_import.status == ImportStatus.COMPLETED, lead_import.error
    assert (lead_import.total_rows, lead_import.processed_rows) == (100_000, 100_000)
    assert lead_import.failed_rows == invalid
    assert lead_import.duplicate_rows == duplicates
    assert lead_import.successful_rows == len(expected_rows) == 100_000 - invalid - duplicates
    source_rows = db.session.execute(
        sa.select(Lead.source_row).where(Lead.import_id == import_id).order_by(Lead.source_row)
    ).scalars()
    assert list(source_rows) == expected_rows
    counts = Counter(
        db.session.execute(sa.select(Lead.telecaller_id).where(Lead.import_id == import_id)).scalars()
    )
    assert max(counts.values()) - min(counts.values()) <= 1 and len(counts) == 7
    assert {int(k): v for k, v in lead_import.distribution.items()} == dict(counts)
    report = b"".join(iter_error_report(lead_import)).decode().splitlines()
    assert len(report) == 1 + invalid + duplicates
    assert report[1].startswith("2,phone '990000' is not a valid phone number")
    assert max(parameters) < MAX_PARAMETERS
    assert db.session.get(Branch, branch.id).lead_cursor == lead_import.successful_rows
    assert lookups_under_lock == []  # every batch used the reading thread's look-ahead


def test_a_lead_written_after_the_look_ahead_is_still_a_duplicate(pg_app, worker, monkeypatch):
    """A lead that is not an import's (so the cursor does not move) lands between the reading thread's
    lookup of a batch and the batch's transaction: the COPY meets the unique constraint, the batch is
    redone with a lookup under the lock, and the row is reported as a duplicate."""
    monkeypatch.setattr(batch_reader, "BATCH_ROWS", 100)
    branch = Branch(name=f"Aluva {uuid.uuid4().hex[:6]}")
    db.session.add(branch)
    db.session.commit()
    callers = telecallers(branch, 2)
    looked_up = batch_reader.BatchReader._looked_up
    engine, branch_id = db.engine, branch.id
    added = []

    def then_someone_adds_a_lead(self, batch):  # in the reading thread
        batch = looked_up(self, batch)
        if batch[0].row_number == 102 and not added:  # the second batch, rows 102..201
            added.append(True)
            with engine.begin() as conn:
                conn.execute(
                    sa.insert(Lead.__table__).values(
                        branch_id=branch_id, student_name="Walk-in", phone_number="+919800000150",
                        status="new", created_at=sa.func.now(),
                    )
                )  # fmt: skip
        return batch

    monkeypatch.setattr(batch_reader.BatchReader, "_looked_up", then_someone_adds_a_lead)
    rows = [[f"S {n}", f"98{n:08d}", "", ""] for n in range(300)]

    import_id = queue_import(branch, rows_csv(rows), callers)
    wait_all(worker)
    db.session.expire_all()
    lead_import = db.session.get(LeadImport, import_id)

    assert lead_import.status == ImportStatus.COMPLETED, lead_import.error
    assert (lead_import.successful_rows, lead_import.duplicate_rows) == (299, 1)
    report = b"".join(iter_error_report(lead_import)).decode().splitlines()
    assert report[1].startswith("152,duplicate: phone +919800000150 is already a lead of this branch")
    phones = db.session.execute(sa.select(Lead.phone_number).where(Lead.branch_id == branch.id)).scalars()
    assert sorted(phones) == sorted(f"+9198{n:08d}" for n in range(300))


def test_two_imports_of_one_branch_at_once_stay_balanced_and_never_share_a_phone(pg_app, worker, monkeypatch):
    monkeypatch.setattr(batch_reader, "BATCH_ROWS", 300)  # many interleaved transactions
    branch = Branch(name=f"Thrissur {uuid.uuid4().hex[:6]}")
    db.session.add(branch)
    db.session.commit()
    callers = telecallers(branch, 3)
    # Both files hold phones 0..5999; the first also 6000..7999, the second 8000..9999.
    first = [[f"A {n}", f"98{n:08d}", "", ""] for n in [*range(6000), *range(6000, 8000)]]
    second = [[f"B {n}", f"98{n:08d}", "", ""] for n in [*range(5999, -1, -1), *range(8000, 10_000)]]

    ids = [queue_import(branch, rows_csv(first), callers), queue_import(branch, rows_csv(second), callers)]
    wait_all(worker)
    db.session.expire_all()
    imports = [db.session.get(LeadImport, i) for i in ids]

    assert [i.status for i in imports] == [ImportStatus.COMPLETED] * 2, [i.error for i in imports]
    phones = db.session.execute(sa.select(Lead.phone_number).where(Lead.branch_id == branch.id)).scalars()
    assert sorted(phones) == sorted(f"+9198{n:08d}" for n in range(10_000))  # each phone once
    assert sum(i.successful_rows for i in imports) == 10_000
    assert sum(i.duplicate_rows for i in imports) == 6000
    for lead_import in imports:
        counts = list(lead_import.distribution.values())
        assert max(counts) - min(counts) <= 1, lead_import.distribution
    assert db.session.get(Branch, branch.id).lead_cursor == 10_000


def test_overlapping_imports_racing_for_a_batch_both_complete_without_a_retry(pg_app, worker, monkeypatch):
    """As on SQLite (tests/imports/test_import_pipeline.py): the first import's batch has looked its phones up
    when the second tries to commit some of them; the branch row's lock makes the second wait, then
    report them as duplicates. Both complete at their first attempt, every phone once."""
    branch = Branch(name=f"Kollam {uuid.uuid4().hex[:6]}")
    db.session.add(branch)
    db.session.commit()
    callers = telecallers(branch, 3)
    first, second = force_overlapping_batches(monkeypatch)
    ids = [queue_import(branch, rows_csv(rows), callers) for rows in (first, second)]
    wait_all(worker)
    db.session.expire_all()
    imports = [db.session.get(LeadImport, i) for i in ids]

    assert [i.status for i in imports] == [ImportStatus.COMPLETED] * 2, [i.error for i in imports]
    jobs = [db.session.get(Job, i.job_id) for i in imports]
    assert [j.attempts for j in jobs] == [1, 1], [e.error for j in jobs for e in j.errors]
    # Batches interleave as the lock falls: each phone is a lead of one import, a duplicate of the other.
    assert sum(i.successful_rows for i in imports) == 450
    assert sum(i.duplicate_rows for i in imports) == 150
    phones = db.session.execute(sa.select(Lead.phone_number).where(Lead.branch_id == branch.id)).scalars()
    assert sorted(phones) == [f"+9198{n:08d}" for n in range(450)]
    report = b"".join(iter_error_report(lead_import := imports[1])).decode("utf-8-sig").splitlines()
    assert report[1].startswith("2,duplicate: phone +919800000150 is already a lead of this branch")
    assert lead_import.failed_rows == 0


def test_damaged_rows_are_rejected_and_reported_on_postgresql(pg_app, worker):
    """COPY takes no NUL and JSONB no lone surrogate: the damaged rows are rejected, their cells made
    printable, and the rest of the file imported with its names intact."""
    branch = Branch(name=f"Kannur {uuid.uuid4().hex[:6]}")
    db.session.add(branch)
    db.session.commit()
    rows = [
        ["Ünïcode Nair", "9800000001", "", "Kōchi"],
        *[[f"S {n}", f"98{n:08d}", "", ""] for n in range(10, 3010)],
    ]
    data = rows_csv(rows) + b"Caf\xe9 Nair,9800000002,,\r\nAsha\x00,9800000003,,\r\n"

    import_id = queue_import(branch, data, telecallers(branch, 2))
    wait_all(worker)
    db.session.expire_all()
    lead_import = db.session.get(LeadImport, import_id)

    assert lead_import.status == ImportStatus.COMPLETED, lead_import.error
    assert (lead_import.successful_rows, lead_import.failed_rows) == (3001, 2)
    name = db.session.execute(sa.select(Lead.student_name).filter_by(phone_number="+919800000001")).scalar()
    assert name == "Ünïcode Nair"
    report = b"".join(iter_error_report(lead_import)).decode("utf-8-sig").splitlines()
    assert report[1:] == [
        "3003,Student Name has bytes that are not UTF-8 text (0xE9): check this row's encoding,"
        "Caf\ufffd Nair,9800000002,,",
        '3004,"Student Name contains a NUL byte (0x00), which is not text",Asha\ufffd,9800000003,,',
    ]
