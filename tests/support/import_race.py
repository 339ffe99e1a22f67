"""The race of two overlapping imports of one branch, forced the same way on SQLite and PostgreSQL."""

from __future__ import annotations

import threading

from edcrm.imports import batch_reader, batch_writer


def force_overlapping_batches(monkeypatch) -> tuple[list[list[str]], list[list[str]]]:
    """Rows of two imports sharing 150 phones, with the importer patched so that the first import's
    second batch has looked its phones up when the second import commits leads with some of them.
    Batches are 100 rows; returns the two files' rows."""
    monkeypatch.setattr(batch_reader, "BATCH_ROWS", 100)
    first = [[f"A {n}", f"98{n:08d}", "", ""] for n in range(300)]
    second = [[f"B {n}", f"98{n:08d}", "", ""] for n in range(150, 450)]
    first_looked_up, second_committed = threading.Event(), threading.Event()
    known_leads, commit_batch = batch_writer.BatchWriter.known_leads, batch_writer.BatchWriter.commit_batch

    def look_up_then_let_the_other_commit(self, batch, lookup, cursor):
        known = known_leads(self, batch, lookup, cursor)
        if batch[0].cells[0] == "A 100":  # its second batch (the first writes before its lookup)
            first_looked_up.set()
            second_committed.wait(timeout=0.5)  # it must not manage to, before this batch commits
        return known

    def commit_once_the_first_looked_up(self, batch):
        second = batch[0].cells[0].startswith("B ")
        if second:
            first_looked_up.wait(timeout=10)
        commit_batch(self, batch)
        if second:
            second_committed.set()

    monkeypatch.setattr(batch_writer.BatchWriter, "known_leads", look_up_then_let_the_other_commit)
    monkeypatch.setattr(batch_writer.BatchWriter, "commit_batch", commit_once_the_first_looked_up)
    return first, second
