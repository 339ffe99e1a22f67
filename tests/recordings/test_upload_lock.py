"""One writer per upload: a PATCH while another is in flight is refused (UploadLocked), on PostgreSQL
(advisory locks, across connections as across hosts) and on SQLite (a lease that runs out)."""

from __future__ import annotations

import io
import threading
import time

import pytest
import sqlalchemy as sa
from werkzeug.exceptions import ClientDisconnected

from edcrm.extensions import db
from edcrm.models import RecordingUpload, Role
from edcrm.recordings import tus, upload_lock
from edcrm.recordings.errors import UploadLocked
from tests.support.audio_samples import wav
from tests.support.people import make_user
from tests.support.recordings import make_call_log


class GatedBody:
    """A body that sends its first bytes, then waits for `gate` before the rest (a slow phone)."""

    def __init__(self, data: bytes, gate: threading.Event, first: int = 100):
        self._stream = io.BytesIO(data)
        self._gate, self._first = gate, first
        self.started = threading.Event()

    def read(self, size: int = -1) -> bytes:
        position = self._stream.tell()
        if position < self._first:
            return self._stream.read(min(size, self._first - position))
        self.started.set()
        assert self._gate.wait(30)
        return self._stream.read(size)


def two_patches_at_once(app, upload_id: str, data: bytes) -> tuple[object, BaseException | None]:
    """A PATCH whose body is held half-way in a thread, and a second PATCH meanwhile: the second's
    outcome, then the first's (None when it succeeded)."""
    gate, first_error = threading.Event(), []
    body = GatedBody(data, gate)

    def first() -> None:
        with app.app_context():
            upload = db.session.get_one(RecordingUpload, upload_id)
            try:
                tus.append(upload, offset=0, body=body, content_length=len(data))
            except BaseException as error:
                first_error.append(error)

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert body.started.wait(30)
        upload = db.session.get_one(RecordingUpload, upload_id)
        try:
            second: object = tus.append(upload, offset=0, body=io.BytesIO(data), content_length=len(data))
        except UploadLocked as error:
            second = error
    finally:
        gate.set()
        thread.join(30)
    return second, (first_error[0] if first_error else None)


# -- SQLite: a lease ------------------------------------------------------------------------------------


def test_a_second_patch_while_one_is_in_flight_is_refused_and_the_first_completes(app, branch, telecaller):
    data = wav(0.5)
    upload = tus.create(telecaller, make_call_log(branch, telecaller), length=len(data), metadata={})

    second, first_error = two_patches_at_once(app, upload.id, data)

    assert isinstance(second, UploadLocked)
    assert first_error is None
    db.session.expire_all()
    assert tus.state(db.session.get_one(RecordingUpload, upload.id)).offset == len(data)


def test_a_lease_is_released_at_the_end_and_runs_out_if_its_holder_dies(app, branch, telecaller):
    upload = tus.create(telecaller, make_call_log(branch, telecaller), length=10, metadata={})
    with upload_lock.hold(upload.id), pytest.raises(UploadLocked), upload_lock.hold(upload.id):
        pass
    with upload_lock.hold(upload.id):  # released: free again
        pass

    app.config["UPLOAD_LEASE_S"] = 0.3
    with upload_lock.hold(upload.id) as dying:  # a holder that stops renewing (a killed process)
        time.sleep(0.4)
        # Its lease ran out: another request takes the upload, and the old holder finds it lost.
        with upload_lock.hold(upload.id), pytest.raises(UploadLocked):
            dying.renew()


def test_a_live_holder_renews_its_lease(app, branch, telecaller):
    app.config["UPLOAD_LEASE_S"] = 0.3
    upload = tus.create(telecaller, make_call_log(branch, telecaller), length=10, metadata={})
    with upload_lock.hold(upload.id) as lease:
        for _ in range(4):
            time.sleep(0.15)
            lease.renew()
        with pytest.raises(UploadLocked), upload_lock.hold(upload.id):
            pass


class SlowBody:
    """A body that sends a block, then waits, `blocks` times (a phone on a slow line)."""

    def __init__(self, data: bytes, blocks: int, pause: float):
        self._stream, self._size, self._pause = io.BytesIO(data), -(-len(data) // blocks), pause
        self.started = threading.Event()

    def read(self, size: int = -1) -> bytes:
        self.started.set()
        time.sleep(self._pause)
        return self._stream.read(min(size, self._size))


def test_a_slow_patch_keeps_its_lease_past_its_length_while_bytes_arrive(app, branch, telecaller):
    app.config["UPLOAD_LEASE_S"] = 0.3
    data = wav(0.5)
    upload = tus.create(telecaller, make_call_log(branch, telecaller), length=len(data), metadata={})
    outcome: list[object] = []

    def slow() -> None:
        with app.app_context():
            slow_upload = db.session.get_one(RecordingUpload, upload.id)
            outcome.append(tus.append(slow_upload, offset=0, body=body))

    body = SlowBody(data, 8, 0.1)
    thread = threading.Thread(target=slow)
    thread.start()
    assert body.started.wait(30)  # the PATCH holds the upload
    time.sleep(0.6)  # twice the lease: renewed since
    with pytest.raises(UploadLocked):
        tus.append(upload, offset=0, body=io.BytesIO(data))
    thread.join(30)
    assert isinstance(outcome[0], tus.TusState) and outcome[0].finished


# -- PostgreSQL: advisory locks ---------------------------------------------------------------------------


@pytest.fixture
def pg_upload(pg_app):
    from edcrm.models import Branch

    branch = Branch(name="Kochi")
    db.session.add(branch)
    db.session.commit()
    caller = make_user(branch, Role.TELECALLER, email="caller@kochi.test")
    data = wav(0.5)
    upload = tus.create(caller, make_call_log(branch, caller), length=len(data), metadata={})
    return upload, data


def test_two_concurrent_patches_on_postgresql_one_is_locked_out(pg_app, pg_upload):
    upload, data = pg_upload

    second, first_error = two_patches_at_once(pg_app, upload.id, data)

    assert isinstance(second, UploadLocked)
    assert first_error is None
    db.session.expire_all()
    assert db.session.get_one(RecordingUpload, upload.id).offset == len(data)
    with upload_lock.hold(upload.id):  # released with the request
        pass


def test_the_advisory_lock_is_held_by_its_connection_and_leaves_with_it(pg_app, pg_upload):
    upload, _ = pg_upload
    key = upload_lock._advisory_key(upload.id)
    other = sa.create_engine(pg_app.config["SQLALCHEMY_DATABASE_URI"], poolclass=sa.pool.NullPool)
    try:
        with other.connect() as conn:  # another process (or host) holding the upload, then dying
            assert conn.execute(
                sa.text("SELECT pg_try_advisory_lock(:n, :k)"), {"n": upload_lock.NAMESPACE, "k": key}
            ).scalar_one()
            with pytest.raises(UploadLocked), upload_lock.hold(upload.id):
                pass
        # Its connection closed: PostgreSQL releases the lock as the session's process ends, a moment
        # after the client hung up.
        deadline = time.monotonic() + 10
        while True:
            try:
                with upload_lock.hold(upload.id):
                    break
            except UploadLocked:
                assert time.monotonic() < deadline, "the lock outlived its connection"
                time.sleep(0.05)
    finally:
        other.dispose()


class CutWhenTold:
    """A body that sends `data`, then waits for `cut`, then fails as a connection the server finds
    broken only a moment later."""

    def __init__(self, data: bytes, cut: threading.Event):
        self._stream, self._cut = io.BytesIO(data), cut
        self.started = threading.Event()

    def read(self, size: int = -1) -> bytes:
        block = self._stream.read(size)
        if block:
            return block
        self.started.set()
        assert self._cut.wait(30)
        time.sleep(0.3)
        raise ClientDisconnected()


def test_a_head_right_after_a_cut_answers_what_the_cut_patch_kept(app, branch, telecaller):
    """A client resumes at once; the server notices its PATCH was cut a moment later and commits what
    arrived: the HEAD waits for that, and resumes from there instead of sending it all again."""
    data = wav(2.0)
    upload = tus.create(telecaller, make_call_log(branch, telecaller), length=len(data), metadata={})
    cut = threading.Event()
    body = CutWhenTold(data[:20_000], cut)

    def patch() -> None:
        with app.app_context(), pytest.raises(ClientDisconnected):
            tus.append(db.session.get_one(RecordingUpload, upload.id), offset=0, body=body)

    thread = threading.Thread(target=patch)
    thread.start()
    assert body.started.wait(30)
    cut.set()
    assert tus.state(upload).offset == 20_000
    thread.join(30)


def test_a_head_waits_for_a_live_patch_only_so_long(app, branch, telecaller):
    app.config["TUS_HEAD_WAIT_S"] = 0.2
    data = wav(0.5)
    upload = tus.create(telecaller, make_call_log(branch, telecaller), length=len(data), metadata={})
    gate = threading.Event()
    body = GatedBody(data, gate)

    def patch() -> None:
        with app.app_context():
            tus.append(db.session.get_one(RecordingUpload, upload.id), offset=0, body=body)

    thread = threading.Thread(target=patch)
    thread.start()
    try:
        assert body.started.wait(30)
        started = time.monotonic()
        assert tus.state(upload).offset == 0  # the committed offset: the PATCH is still arriving
        assert 0.2 <= time.monotonic() - started < 5
    finally:
        gate.set()
        thread.join(30)
    assert tus.state(upload).finished
