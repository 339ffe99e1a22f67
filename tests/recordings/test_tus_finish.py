"""tus uploads to the end: the recordings actor (on the StubBroker, with a real worker) makes the Recording
of an upload whose offset reached its length, on local storage and on moto's S3 server over HTTP."""

from __future__ import annotations

import hashlib
import io

import pytest

from edcrm.extensions import db
from edcrm.models import CallLog, Recording, UploadStatus
from edcrm.models.recording import ConcatRole
from edcrm.recordings import tus
from edcrm.storage import get_storage
from tests.recordings import test_tus_append
from tests.recordings.test_tus_append import MIB, PART, random_wav, reload, send
from tests.support.audio_samples import amr
from tests.support.jobs import run_jobs
from tests.support.recordings import make_call_log, storage_files

backend = test_tus_append.backend  # the fixture: local storage, then S3


def recording_of(call_log: CallLog) -> Recording:
    db.session.expire_all()
    recording = db.session.get_one(CallLog, call_log.id).recording
    assert recording is not None
    return recording


def stored(recording: Recording) -> bytes:
    with get_storage().open(recording.storage_key) as file:
        return file.read()


def test_a_wav_sent_in_patches_becomes_its_recording(
    app, backend, branch, telecaller, stub_broker, stub_worker
):
    data = random_wav(PART + 2 * MIB + 44)
    call_log = make_call_log(branch, telecaller)
    sha256 = hashlib.sha256(data).hexdigest()
    upload = tus.create(
        telecaller, call_log, length=len(data), metadata={"filename": "a.wav", "sha256": sha256}
    )
    for start in range(0, len(data), 3 * MIB):
        send(upload, data[start : start + 3 * MIB], start)

    run_jobs(stub_broker, stub_worker, "recordings")

    recording = recording_of(call_log)
    assert (recording.size, recording.sha256, recording.content_type) == (len(data), sha256, "audio/wav")
    assert recording.duration_seconds == pytest.approx((len(data) - 44) / 16000, abs=0.001)
    assert recording.storage_key == f"recordings/{call_log.id}/{upload.id}"
    assert stored(recording) == data
    upload = reload(upload)
    assert upload.status is UploadStatus.COMPLETED and upload.recording_id == recording.id
    if backend == "local":
        assert storage_files(app) == [recording.storage_key]  # no tail, no part left


def test_raw_amr_with_its_length_declared_late_has_its_counted_duration(
    app, backend, branch, telecaller, stub_broker, stub_worker
):
    data = amr(240.0)  # 4 minutes: 384 kB
    call_log = make_call_log(branch, telecaller)
    upload = tus.create(telecaller, call_log, length=None, metadata={"filename": "call.amr"})
    send(upload, data[:100_000], 0)
    send(upload, data[100_000:], 100_000)
    tus.append(upload, offset=len(data), body=io.BytesIO(b""), length=len(data))
    assert reload(upload).audio_state["frames"] == 240 * 50

    run_jobs(stub_broker, stub_worker, "recordings")

    recording = recording_of(call_log)
    assert (recording.content_type, recording.duration_seconds, recording.size) == (
        "audio/amr",
        240.0,
        len(data),
    )
    assert recording.sha256 == hashlib.sha256(data).hexdigest()
    assert stored(recording) == data


def test_a_concatenation_becomes_one_recording_and_its_partials_go(
    app, backend, branch, telecaller, stub_broker, stub_worker
):
    data = random_wav(PART + 3 * MIB)
    cut = 4 * MIB
    partials = []
    for piece in (data[:cut], data[cut:]):
        partial = tus.create(telecaller, None, length=len(piece), metadata={}, concat=ConcatRole.PARTIAL)
        send(partial, piece, 0)
        partials.append(reload(partial))
    call_log = make_call_log(branch, telecaller)

    tus.create(telecaller, call_log, length=None, metadata={}, concat=ConcatRole.FINAL, partials=partials)
    run_jobs(stub_broker, stub_worker, "recordings")

    recording = recording_of(call_log)
    assert (recording.size, recording.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert stored(recording) == data
    assert not any(get_storage().exists(partial.object_key) for partial in partials)


def test_a_recording_whose_sha256_is_not_the_announced_one_fails_its_upload(
    app, backend, branch, telecaller, stub_broker, stub_worker
):
    data = random_wav(MIB)
    call_log = make_call_log(branch, telecaller)
    upload = tus.create(telecaller, call_log, length=len(data), metadata={"sha256": "0" * 64})
    send(upload, data, 0)

    run_jobs(stub_broker, stub_worker, "recordings")

    upload = reload(upload)
    assert upload.status is UploadStatus.FAILED and upload.recording_id is None
    db.session.expire_all()
    assert db.session.get_one(CallLog, call_log.id).recording is None
    assert not get_storage().exists(upload.object_key)
