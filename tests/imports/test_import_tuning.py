"""The process-wide settings an import changes while it runs, and the gate that pauses its reading thread."""

from __future__ import annotations

import gc
import sys
import threading

from edcrm.imports.pipeline import (
    IMPORT_GC_THRESHOLD,
    CpuGate,
    fewer_collections,
    prompt_thread_switches,
)


def test_collections_are_restored_by_the_last_import_to_end():
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    with fewer_collections():
        assert gc.get_threshold()[0] == max(before[0], IMPORT_GC_THRESHOLD)
        assert gc.get_freeze_count() > frozen or frozen > 0
        with fewer_collections():  # a second import in the same process
            pass
        assert gc.get_threshold()[0] == max(before[0], IMPORT_GC_THRESHOLD)
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == frozen


def test_collections_are_restored_after_an_error():
    before = gc.get_threshold()
    try:
        with fewer_collections():
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert gc.get_threshold() == before


def test_the_switch_interval_is_restored():
    before = sys.getswitchinterval()
    with prompt_thread_switches():
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
        with fewer_collections():
            pass
        assert 0 < gc.get_freeze_count() <= frozen  # still frozen (a few may have been freed since)
    finally:
        gc.unfreeze()
