"""The part writer (edcrm.recordings.ingest) and what is counted as bytes pass: parts sent two at a time
while the next fills, the part count bounded, a tail that got ahead of the database, raw AMR's duration
counted across requests."""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import threading
import time
import tracemalloc

import pytest

from edcrm.models.recording import ConcatRole
from edcrm.recordings import audio, ingest, tus, upload_lock
from edcrm.recordings.errors import TooLarge, UploadLocked
from edcrm.recordings.tus import session
from edcrm.storage import get_storage
from tests.recordings import test_tus_append
from tests.recordings.test_tus_append import (
    MIB,
    PART,
    assembled,
    random_wav,
    reload,
    send,
)
from tests.support.audio_samples import amr
from tests.support.recordings import make_call_log

backend = test_tus_append.backend  # the fixture: local storage, then S3


class Watched:
    """The app's storage, with put_part watched: how many run at once, at most."""

    def __init__(self, storage, delay: float = 0.05):
        self._storage, self._delay = storage, delay
        self._lock = threading.Lock()
        self.running = self.most = self.calls = 0

    def put_part(self, *args, **kwargs):
        with self._lock:
            self.running += 1
            self.calls += 1
            self.most = max(self.most, self.running)
        try:
            time.sleep(self._delay)
            return self._storage.put_part(*args, **kwargs)
        finally:
            with self._lock:
                self.running -= 1

    def __getattr__(self, name):
        return getattr(self._storage, name)


def target(storage, key: str, part_size: int, *, parts: int = 0, tail_size: int = 0) -> ingest.Target:
    started: list[str] = []

    def multipart() -> str:
        if not started:
            started.append(storage.start_multipart(key, part_size=part_size))
        return started[0]

    return ingest.Target(
        key=key,
        prefix="uploads/test/",
        part_size=part_size,
        parts=parts,
        tail_size=tail_size,
        multipart=multipart,
    )


def test_parts_go_up_while_the_next_one_fills_at_most_two_at_once(app, backend):
    data = random_wav(6 * PART + 124)
    with app.app_context():
        storage = Watched(get_storage())
        received = ingest.receive(
            io.BytesIO(data),
            storage,
            target(storage, "recordings/1/x", PART),
            limit=len(data),
            ends_at_limit=True,
        )

    assert [part.size for part in received.parts] == [PART] * 6 + [124]
    assert [part.number for part in received.parts] == list(range(1, 8))
    assert all(part.etag for part in received.parts)
    assert received.tail_size == 0 and received.size == len(data)
    assert storage.calls == 7 and storage.most == 2  # overlapped, but never more than two


def test_part_sizes_are_raised_so_that_ten_thousand_parts_hold_the_limit():
    assert ingest.part_size_for(8 * MIB, 500 * MIB) == 8 * MIB
    assert ingest.part_size_for(1, 1000) == 5 * MIB  # S3's least part size
    limit = ingest.MAX_PARTS * 5 * MIB + 1
    size = ingest.part_size_for(5 * MIB, limit)
    assert size % MIB == 0 and size * ingest.MAX_PARTS >= limit and size == 6 * MIB


def test_a_new_upload_has_a_part_size_that_covers_the_limit(app, branch, telecaller):
    app.config.update(MAX_RECORDING_BYTES=200 * 1024 * MIB, TUS_PART_BYTES=8 * MIB)  # 200 GiB
    upload = tus.create(telecaller, make_call_log(branch, telecaller), length=None, metadata={})
    assert upload.part_size * ingest.MAX_PARTS >= 200 * 1024 * MIB


def test_a_body_that_would_need_more_parts_than_a_multipart_upload_holds_is_refused(app, monkeypatch):
    monkeypatch.setattr(ingest, "MAX_PARTS", 2)
    with app.app_context(), pytest.raises(TooLarge):
        storage = get_storage()
        ingest.receive(
            io.BytesIO(bytes(2 * PART + 1)),  # one byte of a third part
            storage,
            target(storage, "recordings/1/y", PART),
            limit=10**9,
            ends_at_limit=False,
        )


def test_a_tail_staged_ahead_of_a_failed_commit_is_read_as_the_database_says(
    backend, branch, telecaller, monkeypatch
):
    """The tail object is written, then the commit fails (the database went away): the tail holds more
    bytes than the database names. The PATCH sent again from the committed offset makes the file whole."""
    data = random_wav(PART + 2 * MIB)
    upload = tus.create(telecaller, make_call_log(branch, telecaller), length=len(data), metadata={})
    send(upload, data[:MIB], 0)
    real_expiry, failures = session.new_expiry, []

    def failing_once():
        if not failures:
            failures.append(True)
            raise ConnectionError("the database went away")
        return real_expiry()

    monkeypatch.setattr(session, "new_expiry", failing_once)
    with pytest.raises(ConnectionError):
        send(upload, data[MIB : 3 * MIB], MIB)  # the staged tail now has 3 MiB, the database says 1
    assert reload(upload).offset == MIB

    send(upload, data[MIB:], MIB)
    assert assembled(upload) == data


# -- raw AMR counted as it arrives ------------------------------------------------------------------------


@pytest.mark.parametrize("extra", [b"", bytes([(7 << 3) | 4]) + bytes(10)], ids=["whole", "cut-last-frame"])
def test_raw_amr_is_counted_across_requests_as_examine_counts_it(app, branch, telecaller, extra):
    data = amr(3.0) + extra
    upload = tus.create(telecaller, make_call_log(branch, telecaller), length=len(data), metadata={})
    cuts = [0, 5, 70, 333, *range(1000, len(data), 777), len(data)]  # the first shorter than the head
    for start, stop in itertools.pairwise(cuts):
        send(upload, data[start:stop], start)

    state = reload(upload).audio_state
    assert audio.examine_counted(audio.AMR, state, len(data)) == audio.examine(audio.AMR, io.BytesIO(data))
    assert audio.examine_counted(audio.AMR, state, len(data)) == 3.0


def test_amr_frames_of_a_type_never_sent_are_no_recording():
    counter = audio.AmrCounter.start(audio.AMR)
    data = amr(0.1) + bytes([(12 << 3) | 4]) + bytes(40)
    counter.feed(0, data[:50])
    counter.feed(50, data[50:])
    with pytest.raises(audio.NotAudio):
        audio.examine_counted(audio.AMR, counter.state(), len(data))


def test_partial_uploads_are_not_examined_nor_counted(app, telecaller):
    piece = amr(1.0)[100:]  # the middle of a recording: no magic
    upload = tus.create(telecaller, None, length=len(piece), metadata={}, concat=ConcatRole.PARTIAL)
    send(upload, piece, 0)
    upload = reload(upload)
    assert upload.audio_state is None and upload.head == piece[:64]
    assert tus.state(upload).finished


class GeneratedBody:
    """`size` bytes of a WAV header and random samples, made as they are read (never whole in memory),
    hashed as they go."""

    def __init__(self, size: int):
        self._header = random_wav(44 + 2)[:44]
        self._left, self.sha256 = size, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        size = min(self._left, ingest.BLOCK_SIZE if size < 0 else size)
        block = (self._header + os.urandom(size))[:size] if self._header else os.urandom(size)
        self._header = b""
        self._left -= len(block)
        self.sha256.update(block)
        return block


def test_a_long_patch_holds_a_few_blocks_in_memory_not_its_parts(app, branch, telecaller):
    app.config.update(TUS_PART_BYTES=PART)
    size = 6 * PART + 1000
    upload = tus.create(telecaller, make_call_log(branch, telecaller), length=size, metadata={})
    body = GeneratedBody(size)

    tracemalloc.start()
    try:
        state = tus.append(upload, offset=0, body=body, content_length=size)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert state.finished
    assert peak < 8 * MIB, f"a PATCH of {size / MIB:.0f} MiB held {peak / MIB:.1f} MiB at its peak"
    assert hashlib.sha256(assembled(upload)).hexdigest() == body.sha256.hexdigest()


def test_a_patch_waiting_on_a_slow_storage_keeps_its_lease(app, branch, telecaller, monkeypatch):
    """SQLite: the lease is renewed while the parts in flight are waited for, not only as bytes come."""
    app.config.update(TUS_PART_BYTES=PART, UPLOAD_LEASE_S=0.3)
    monkeypatch.setattr(ingest, "RENEW_WHILE_WAITING_S", 0.05)
    slow = Watched(get_storage(), delay=1.0)
    monkeypatch.setattr(session, "get_storage", lambda: slow)
    data = random_wav(2 * PART + 100)
    upload = tus.create(telecaller, make_call_log(branch, telecaller), length=len(data), metadata={})
    outcome: list[object] = []

    def patch() -> None:
        with app.app_context():
            outcome.append(tus.append(reload(upload), offset=0, body=io.BytesIO(data)))

    thread = threading.Thread(target=patch)
    thread.start()
    time.sleep(0.7)  # the body is in; its parts are still being sent, for longer than the lease
    with pytest.raises(UploadLocked):
        tus.append(upload, offset=0, body=io.BytesIO(data))
    thread.join(30)
    assert isinstance(outcome[0], tus.TusState) and outcome[0].finished


def test_a_writer_whose_lease_was_taken_commits_nothing(app, branch, telecaller, monkeypatch):
    """SQLite: a PATCH stalled past its lease (here: waiting on storage, never renewing) while another
    request took the upload finds out before it commits, and keeps nothing."""
    app.config.update(TUS_PART_BYTES=PART, UPLOAD_LEASE_S=0.3)
    monkeypatch.setattr(ingest, "RENEW_WHILE_WAITING_S", 60)
    slow = Watched(get_storage(), delay=1.0)
    monkeypatch.setattr(session, "get_storage", lambda: slow)
    data = random_wav(PART + 100)
    upload = tus.create(telecaller, make_call_log(branch, telecaller), length=len(data), metadata={})
    outcome: list[BaseException] = []

    def patch() -> None:
        with app.app_context():
            try:
                tus.append(reload(upload), offset=0, body=io.BytesIO(data))
            except BaseException as error:
                outcome.append(error)

    thread = threading.Thread(target=patch)
    thread.start()
    time.sleep(0.6)
    with upload_lock.hold(upload.id):  # the lease ran out: another request has the upload now
        thread.join(30)
    assert isinstance(outcome[0], UploadLocked)
    assert reload(upload).offset == 0
