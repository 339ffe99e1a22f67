"""Spool files live in a directory of the process's own, swept when its process is gone."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
import tempfile
import time

import pytest

from edcrm import spool
from edcrm.extensions import db
from edcrm.models import CallLog
from edcrm.storage import S3Storage
from tests.support.audio_samples import wav
from tests.support.jobs import run_jobs
from tests.support.people import bearer
from tests.support.recordings import make_call_log, split, storage_files


@pytest.fixture
def tmpdir_(tmp_path, monkeypatch):
    """TMPDIR of this test's own (and a fresh spool directory in it)."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(spool, "_made", {})
    return tmp_path / "tmp"


@pytest.fixture
def opened(monkeypatch):
    """The spool files made, by prefix: (prefix, folder)."""
    made: list[tuple[str, str]] = []
    named_file = spool.named_file

    def recording(prefix: str, suffix: str = ""):
        file = named_file(prefix, suffix)
        made.append((prefix, os.path.dirname(file.name)))
        return file

    monkeypatch.setattr(spool, "named_file", recording)
    return made


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_spool_file_is_in_the_processs_private_directory_and_gone_when_closed(tmpdir_):
    with spool.named_file("edcrm-upload-") as file:
        folder = os.path.dirname(file.name)
        assert folder == str(tmpdir_ / "edcrm-spool" / f"{spool._host()}-{os.getpid()}")
        assert os.path.basename(file.name).startswith("edcrm-upload-")
        for path in (folder, os.path.dirname(folder)):
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    assert os.listdir(folder) == []


def test_the_sweep_removes_the_spools_of_processes_that_are_gone_only(tmpdir_):
    root = spool.root()
    mine = spool.directory()
    (mine / "edcrm-upload-in-flight").write_bytes(b"x")
    gone = root / f"{spool._host()}-{dead_pid()}"
    gone.mkdir()
    (gone / "edcrm-recording-abc").write_bytes(b"63 MB, say")
    alive = root / f"{spool._host()}-{os.getppid()}"
    alive.mkdir()
    elsewhere = root / "another-host-1"  # a machine sharing TMPDIR: its pids are not ours to judge
    elsewhere.mkdir()
    old_loose = tmpdir_ / "edcrm-upload-k3j4h5"  # left in TMPDIR itself by a version before the spool
    old_loose.write_bytes(b"x")
    os.utime(old_loose, (time.time() - 2 * spool.LOOSE_SPOOL_AGE_S,) * 2)
    new_loose = tmpdir_ / "edcrm-s3-a8b7c6"
    new_loose.write_bytes(b"x")
    foreign = tmpdir_ / "something-else"
    foreign.write_bytes(b"x")
    os.utime(foreign, (0, 0))

    assert spool.sweep() == 2

    assert sorted(path.name for path in root.iterdir()) == sorted([mine.name, alive.name, elsewhere.name])
    assert (mine / "edcrm-upload-in-flight").exists()
    assert not old_loose.exists() and new_loose.exists() and foreign.exists()


def test_a_directory_left_by_a_dead_process_with_this_pid_is_emptied_on_first_use(tmpdir_):
    stale = spool.root() / f"{spool._host()}-{os.getpid()}"
    stale.mkdir()
    (stale / "edcrm-upload-old").write_bytes(b"x")
    assert spool.directory() == stale
    assert list(stale.iterdir()) == []


def test_the_app_sweeps_at_start(tmpdir_, tmp_path, monkeypatch):
    from edcrm import create_app

    monkeypatch.setenv("EDCRM_INSTANCE_PATH", str(tmp_path / "instance"))
    gone = spool.root() / f"{spool._host()}-{dead_pid()}"
    gone.mkdir()
    create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": "sqlite://"}, web=False)
    assert not gone.exists()


def test_chunks_one_shot_files_and_finalize_spool_there_and_leave_nothing(
    app, client, branch, telecaller, stub_broker, stub_worker, tmpdir_, opened
):
    auth, audio = bearer(telecaller), wav(1.0)
    call_log = make_call_log(branch, telecaller)
    body = {"call_log_id": call_log.id, "filename": "a.wav", "expected_chunks": 2}
    upload_id = client.post("/api/recordings/uploads", json=body, headers=auth).json["upload_id"]
    for index, chunk in enumerate(split(audio, 2)):
        url = f"/api/recordings/uploads/{upload_id}/chunks/{index}"
        assert client.put(url, data=chunk, headers=auth).status_code == 200
    assert client.post(f"/api/recordings/uploads/{upload_id}/complete", headers=auth).status_code == 202
    other = make_call_log(branch, telecaller)
    form = {"file": (io.BytesIO(audio), "b.wav")}
    assert client.post(f"/api/call-logs/{other.id}/recording", data=form, headers=auth).status_code == 202
    run_jobs(stub_broker, stub_worker, "recordings")

    db.session.expire_all()
    assert db.session.get(CallLog, call_log.id).recording is not None
    assert db.session.get(CallLog, other.id).recording is not None
    assert [name for name in storage_files(app) if name.startswith("uploads/")] == []
    folder = str(spool.directory())
    assert sorted(opened) == sorted([("edcrm-upload-", folder)] * 3 + [("edcrm-recording-", folder)] * 2)
    assert os.listdir(folder) == []
    assert os.listdir(tmpdir_) == ["edcrm-spool"]  # nothing loose in TMPDIR


def test_s3_saves_spool_there(s3_server, tmpdir_, opened):
    storage = S3Storage(s3_server.create_bucket(), "p", endpoint_url=s3_server.endpoint_url)
    assert storage.save("a/b", io.BytesIO(b"streamed")) == 8
    assert opened == [("edcrm-s3-", str(spool.directory()))]
    assert os.listdir(spool.directory()) == []
