"""The process-wide settings an import changes while it runs (edcrm.tuning), off in the web process, and
the gate that pauses its reading thread."""

from __future__ import annotations

import gc
import io
import sys
import threading
from contextlib import ExitStack

import pytest

from edcrm import tuning
from edcrm.extensions import db
from edcrm.imports import lifecycle
from edcrm.imports.batch_writer import BatchWriter
from edcrm.jobs.embedded import EmbeddedWorkers
from edcrm.models import ImportStatus, LeadImport
from edcrm.storage import get_storage
from edcrm.tuning import GC_THRESHOLD, SWITCH_INTERVAL, CpuGate, tuned
from tests.support.jobs import stop_embedded


def test_collections_are_restored_by_the_last_import_to_end():
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    with tuned():
        assert gc.get_threshold()[0] == max(before[0], GC_THRESHOLD)
        assert gc.get_freeze_count() > frozen or frozen > 0
        with tuned():  # a second import in the same process
            pass
        assert gc.get_threshold()[0] == max(before[0], GC_THRESHOLD)
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == frozen


def test_collections_are_restored_after_an_error():
    before = gc.get_threshold()
    try:
        with tuned():
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert gc.get_threshold() == before


def test_the_switch_interval_is_restored():
    before = sys.getswitchinterval()
    with tuned():
        assert sys.getswitchinterval() <= before
    assert sys.getswitchinterval() == before


def test_the_gate_holds_the_reading_thread_only_while_closed():
    gate, stopping = CpuGate(), threading.Event()
    passed = threading.Event()

    def reader():
        gate.wait(stopping)
        passed.set()

    with gate.closed():
        thread = threading.Thread(target=reader)
        thread.start()
        assert not passed.wait(0.2)
    assert passed.wait(5)
    thread.join()
    assert gate.open.is_set()


def test_a_closed_gate_lets_a_stopping_reader_go():
    gate, stopping = CpuGate(), threading.Event()
    gate.open.clear()
    stopping.set()
    gate.wait(stopping)  # returns within its poll interval


def test_objects_frozen_before_the_import_stay_frozen():
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with tuned():
            pass
        assert 0 < gc.get_freeze_count() <= frozen  # still frozen (a few may have been freed since)
    finally:
        gc.unfreeze()


def test_concurrent_imports_tune_once_and_the_last_to_leave_restores():
    before = sys.getswitchinterval(), gc.get_threshold(), gc.get_freeze_count()
    first, second = ExitStack(), ExitStack()
    first.enter_context(tuned())
    tuned_state = sys.getswitchinterval(), gc.get_threshold()
    second.enter_context(tuned())  # a second import starts while the first runs
    assert (sys.getswitchinterval(), gc.get_threshold()) == tuned_state
    first.close()  # the first ends before the second: the second stays tuned
    assert (sys.getswitchinterval(), gc.get_threshold()) == tuned_state
    second.close()
    assert (sys.getswitchinterval(), gc.get_threshold(), gc.get_freeze_count()) == before


def test_untuned_changes_nothing_and_its_gate_never_closes():
    before = sys.getswitchinterval(), gc.get_threshold(), gc.get_freeze_count()
    with tuned(enabled=False) as gate:
        assert (sys.getswitchinterval(), gc.get_threshold(), gc.get_freeze_count()) == before
        with gate.closed():
            assert gate.open.is_set()
    assert (sys.getswitchinterval(), gc.get_threshold(), gc.get_freeze_count()) == before


def test_the_embedded_mode_marks_the_app_as_the_web_process(app, stub_broker):
    assert tuning.allowed(app.config)  # a worker process, the CLI, the tests
    workers = EmbeddedWorkers(app, stub_broker).start()
    try:
        assert not tuning.allowed(app.config)
    finally:
        stop_embedded(workers)


@pytest.mark.parametrize("embedded", [False, True], ids=["worker", "web process"])
def test_an_import_is_tuned_except_in_the_web_process(app, branch, telecaller, monkeypatch, embedded):
    if embedded:
        app.config[tuning.EMBEDDED_WORKERS] = True
    before = sys.getswitchinterval(), gc.get_threshold()
    seen = []
    commit_batch = BatchWriter.commit_batch

    def watch(self, batch):
        seen.append((sys.getswitchinterval(), gc.get_threshold(), self.cpu.inert))
        commit_batch(self, batch)

    monkeypatch.setattr(BatchWriter, "commit_batch", watch)
    key = "imports/tuning/leads.csv"
    get_storage().save(key, io.BytesIO(b"Name,Phone\r\nAsha Nair,9847012301\r\n"))
    lead_import = LeadImport(
        branch_id=branch.id,
        filename="leads.csv",
        storage_key=key,
        telecaller_ids=[telecaller.id],
        status=ImportStatus.QUEUED,
    )
    db.session.add(lead_import)
    db.session.commit()

    with app.app_context():
        lifecycle.run_import(lead_import.id)
    db.session.expire_all()

    assert db.session.get(LeadImport, lead_import.id).status == ImportStatus.COMPLETED
    ((interval, threshold, inert),) = seen
    if embedded:
        assert (interval, threshold, inert) == (*before, True)
    else:
        assert interval == min(before[0], SWITCH_INTERVAL)
        assert threshold[0] == max(before[1][0], GC_THRESHOLD)
        assert not inert
    assert (sys.getswitchinterval(), gc.get_threshold()) == before
