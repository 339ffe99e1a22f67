"""The tus domain (edcrm.recordings.tus) driven with real streams, on local storage and on moto's S3
server over HTTP: parts of one size, tails joined and promoted, deferred lengths, cut-off bodies,
checksums, the whole-file SHA-256 carried across requests, expiry, termination."""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import wave
import zlib
from datetime import timedelta

import pytest
import sqlalchemy as sa
from werkzeug.exceptions import ClientDisconnected

from edcrm import jobs
from edcrm.bodytimeout import BodyTimeout
from edcrm.extensions import db
from edcrm.models import RecordingUpload, UploadStatus
from edcrm.models.recording import RecordingUploadPart, UploadReason
from edcrm.models.types import utcnow
from edcrm.recordings import digest, ingest, tus
from edcrm.recordings.errors import (
    BodyEndedEarly,
    ChecksumUnsupported,
    LengthConflict,
    NotARecording,
    OffsetMismatch,
    QueueUnavailable,
    TooLarge,
    TusChecksumMismatch,
    UploadExpired,
    WrongState,
)
from edcrm.routes.bodies import IncompleteBody
from edcrm.storage import StorageUnavailable, get_storage
from tests.support.recordings import make_call_log

MIB = 1024 * 1024
PART = 5 * MIB


def random_wav(size: int) -> bytes:
    """A WAV file of `size` bytes whose samples are random (so a byte out of place shows)."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(os.urandom((size - 44) & ~1))
    data = buffer.getvalue()
    assert len(data) == size - (size & 1)
    return data


class CutBody:
    """A body whose client goes away after `data`: the next read raises what werkzeug raises then."""

    def __init__(self, data: bytes, error: Exception | None = None):
        self._stream = io.BytesIO(data)
        self._error = error or ClientDisconnected()

    def read(self, size: int = -1) -> bytes:
        block = self._stream.read(size)
        if not block:
            raise self._error
        return block


@pytest.fixture(params=["local", "s3"])
def backend(request, app):
    """The app on local storage, or on a bucket of moto's S3 server over HTTP; parts of 5 MiB."""
    app.config.update(TUS_PART_BYTES=PART)
    if request.param == "s3":
        s3_server = request.getfixturevalue("s3_server")
        bucket = s3_server.create_bucket()
        app.config.update(STORAGE_URL=f"s3://{bucket}/edcrm", S3_ENDPOINT_URL=s3_server.endpoint_url)
        app.extensions.pop("edcrm.storage", None)
    return request.param


@pytest.fixture
def call_log(branch, telecaller):
    return make_call_log(branch, telecaller)


def new_upload(telecaller, call_log, length: int | None, **metadata) -> RecordingUpload:
    return tus.create(telecaller, call_log, length=length, metadata={"filename": "call.wav", **metadata})


def reload(upload: RecordingUpload) -> RecordingUpload:
    db.session.expire_all()
    return db.session.get_one(RecordingUpload, upload.id)


def part_sizes(upload: RecordingUpload) -> list[int]:
    rows = db.session.execute(
        sa.select(RecordingUploadPart.size)
        .where(RecordingUploadPart.upload_id == upload.id)
        .order_by(RecordingUploadPart.number)
    )
    return list(rows.scalars())


def assembled(upload: RecordingUpload) -> bytes:
    """The object the upload's committed parts make, completed as the finishing job completes it."""
    upload = reload(upload)
    parts = db.session.execute(
        sa.select(RecordingUploadPart.number, RecordingUploadPart.etag)
        .where(RecordingUploadPart.upload_id == upload.id)
        .order_by(RecordingUploadPart.number)
    ).all()
    storage = get_storage()
    size = storage.complete_multipart(upload.object_key, upload.multipart_id, [tuple(p) for p in parts])
    with storage.open(upload.object_key) as stored:
        data = stored.read()
    assert len(data) == size
    return data


def send(upload, data: bytes, offset: int, **options) -> tus.TusState:
    return tus.append(upload, offset=offset, body=io.BytesIO(data), content_length=len(data), **options)


# -- parts, tails ----------------------------------------------------------------------------------------


def test_bodies_of_any_size_become_parts_of_one_size_with_the_tail_joined(backend, telecaller, call_log):
    data = random_wav(2 * PART + 700_000)
    upload = new_upload(telecaller, call_log, len(data))
    cuts = [0, 7 * MIB, 9 * MIB, 9 * MIB + 1234, len(data)]  # 5 MiB + a tail; the tail joined; ...

    states = [send(upload, data[a:b], a) for a, b in itertools.pairwise(cuts)]

    assert [state.offset for state in states] == cuts[1:]
    assert states[-1].finished and not states[0].finished
    assert part_sizes(upload) == [PART, PART, 700_000]
    upload = reload(upload)
    assert (upload.offset, upload.tail_size, upload.status) == (len(data), 0, UploadStatus.PROCESSING)
    assert upload.object_key == f"recordings/{call_log.id}/{upload.id}"
    assert upload.job_id  # the recordings actor has its job
    assert assembled(upload) == data


def test_the_tail_is_committed_with_the_offset_and_read_back_into_the_next_part(
    backend, telecaller, call_log
):
    data = random_wav(PART + 3 * MIB)
    upload = new_upload(telecaller, call_log, len(data))

    send(upload, data[: 2 * MIB], 0)  # less than a part: only a tail
    after_first = reload(upload)
    assert (after_first.offset, after_first.tail_size, part_sizes(upload)) == (2 * MIB, 2 * MIB, [])
    assert tus.state(upload).offset == 2 * MIB

    send(upload, data[2 * MIB : 6 * MIB], 2 * MIB)  # fills part 1 with the tail's bytes first
    after_second = reload(upload)
    assert (after_second.offset, after_second.tail_size, part_sizes(upload)) == (6 * MIB, MIB, [PART])

    send(upload, data[6 * MIB :], 6 * MIB)
    assert part_sizes(upload) == [PART, 3 * MIB]
    assert assembled(upload) == data


def test_a_length_declared_late_in_an_empty_patch_promotes_the_tail_whole(backend, telecaller, call_log):
    """tus-js-client with uploadLengthDeferred sends its last bytes, then Upload-Length in a PATCH with
    no body: the staged tail must become the last part, not be dropped (tusd's truncation)."""
    data = random_wav(PART + 1_500_000)
    upload = new_upload(telecaller, call_log, None)
    assert tus.state(upload).length is None

    state = send(upload, data, 0)
    assert (state.offset, state.length, state.finished) == (len(data), None, False)
    assert reload(upload).tail_size == 1_500_000

    state = tus.append(upload, offset=len(data), body=io.BytesIO(b""), length=len(data), content_length=0)

    assert (state.offset, state.length, state.finished) == (len(data), len(data), True)
    upload = reload(upload)
    assert upload.status is UploadStatus.PROCESSING and upload.total_size == len(data)
    assert (upload.tail_size, part_sizes(upload)) == (0, [PART, 1_500_000])
    assert assembled(upload) == data  # not truncated
    assert not get_storage().exists(ingest.tail_key(upload.prefix, 2))  # the promoted tail is gone


def test_a_length_declared_with_the_last_bytes_ends_the_upload(backend, telecaller, call_log):
    data = random_wav(3 * MIB)
    upload = new_upload(telecaller, call_log, None)
    send(upload, data[:MIB], 0)
    state = send(upload, data[MIB:], MIB, length=len(data))
    assert state.finished and reload(upload).status is UploadStatus.PROCESSING
    assert assembled(upload) == data


def test_the_whole_file_sha256_carries_across_requests_and_processes(backend, telecaller, call_log):
    if not digest.available():
        pytest.skip("no libcrypto to resume SHA-256 with")
    data = random_wav(PART + 2 * MIB + 17)
    upload = new_upload(telecaller, call_log, len(data))
    for start in range(0, len(data), 3 * MIB + 5):
        send(upload, data[start : start + 3 * MIB + 5], start)
    upload = reload(upload)
    assert upload.hashed_bytes == len(data)
    assert digest.resume(upload.hash_state).hexdigest() == hashlib.sha256(data).hexdigest()
    assert upload.head == data[:64]


# -- bodies cut off, checksums ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cut",
    [ClientDisconnected, IncompleteBody, lambda: BodyTimeout(30)],
    ids=["gone", "incomplete", "timeout"],
)
def test_a_body_cut_off_keeps_what_arrived_and_the_upload_resumes_from_there(
    backend, telecaller, call_log, cut
):
    data = random_wav(2 * PART + MIB)
    upload = new_upload(telecaller, call_log, len(data))
    error = cut()

    with pytest.raises(type(error)) as raised:
        tus.append(upload, offset=0, body=CutBody(data[: 6 * MIB], error), content_length=len(data))

    assert raised.value is error  # the web layer's own error, for it to answer
    state = tus.state(reload(upload))
    assert state.offset == 6 * MIB and not state.finished
    assert (part_sizes(upload), reload(upload).tail_size) == ([PART], MIB)

    send(upload, data[6 * MIB :], 6 * MIB)
    assert assembled(upload) == data
    if digest.available():
        assert digest.resume(reload(upload).hash_state).hexdigest() == hashlib.sha256(data).hexdigest()


def test_a_body_shorter_than_its_content_length_keeps_what_arrived(backend, telecaller, call_log):
    data = random_wav(2 * MIB)
    upload = new_upload(telecaller, call_log, len(data))
    with pytest.raises(BodyEndedEarly):
        tus.append(upload, offset=0, body=io.BytesIO(data[:MIB]), content_length=len(data))
    assert tus.state(reload(upload)).offset == MIB


def test_a_cut_body_with_a_checksum_keeps_nothing(backend, telecaller, call_log):
    data = random_wav(PART + 2 * MIB)
    upload = new_upload(telecaller, call_log, len(data))
    send(upload, data[:MIB], 0)
    rest = data[MIB:]
    checksum = ("sha1", hashlib.sha1(rest).digest())

    with pytest.raises(ClientDisconnected):
        tus.append(upload, offset=MIB, body=CutBody(rest[: 5 * MIB]), checksum=checksum)

    upload = reload(upload)
    assert (upload.offset, upload.tail_size, part_sizes(upload)) == (MIB, MIB, [])
    send(upload, rest, MIB, checksum=checksum)
    assert assembled(upload) == data


def test_a_checksum_mismatch_keeps_nothing_and_the_same_bytes_can_come_again(backend, telecaller, call_log):
    data = random_wav(2 * PART + 3)
    upload = new_upload(telecaller, call_log, len(data))
    send(upload, data[:MIB], 0)
    before = reload(upload)
    saved = (before.offset, before.tail_size, before.hash_state, before.hashed_bytes)
    body = data[MIB : 8 * MIB]

    with pytest.raises(TusChecksumMismatch):
        send(upload, body, MIB, checksum=("sha256", hashlib.sha256(body + b"!").digest()))

    after = reload(upload)
    assert (after.offset, after.tail_size, after.hash_state, after.hashed_bytes) == saved
    assert part_sizes(upload) == []  # the part it sent is not committed
    send(upload, body, MIB, checksum=("sha256", hashlib.sha256(body).digest()))
    send(upload, data[8 * MIB :], 8 * MIB)
    assert assembled(upload) == data


@pytest.mark.parametrize(
    "algorithm, digest_of",
    [
        ("sha1", lambda data: hashlib.sha1(data).digest()),
        ("md5", lambda data: hashlib.md5(data).digest()),
        ("sha256", lambda data: hashlib.sha256(data).digest()),
        ("crc32", lambda data: zlib.crc32(data).to_bytes(4, "big")),
    ],
)
def test_each_checksum_algorithm_checks_the_body(app, telecaller, call_log, algorithm, digest_of):
    data = random_wav(100_000)
    upload = new_upload(telecaller, call_log, len(data))
    with pytest.raises(TusChecksumMismatch):
        send(upload, data[:50_000], 0, checksum=(algorithm, digest_of(data[:50_001])))
    assert send(upload, data[:50_000], 0, checksum=(algorithm, digest_of(data[:50_000]))).offset == 50_000


def test_an_unknown_checksum_algorithm_is_refused_before_the_body(app, telecaller, call_log):
    upload = new_upload(telecaller, call_log, 10)
    with pytest.raises(ChecksumUnsupported):
        send(upload, b"0123456789", 0, checksum=("sha512", b"x"))


# -- refusals ---------------------------------------------------------------------------------------------


def test_a_patch_at_another_offset_is_told_the_upload_s_offset(app, telecaller, call_log):
    data = random_wav(4000)
    upload = new_upload(telecaller, call_log, len(data))
    send(upload, data[:1000], 0)
    with pytest.raises(OffsetMismatch) as raised:
        send(upload, data[500:], 500)
    assert raised.value.offset == 1000
    assert reload(upload).offset == 1000


def test_bytes_past_the_length_or_the_limit_are_refused_and_nothing_is_kept(app, telecaller, call_log):
    data = random_wav(4000)
    upload = new_upload(telecaller, call_log, len(data))
    with pytest.raises(TooLarge) as raised:
        tus.append(upload, offset=0, body=io.BytesIO(data + b"more"))  # no Content-Length to tell
    assert raised.value.limit == len(data) and reload(upload).offset == 0

    app.config["MAX_RECORDING_BYTES"] = 3000
    with pytest.raises(TooLarge):
        new_upload(telecaller, call_log, 4000)
    deferred = new_upload(telecaller, call_log, None)
    with pytest.raises(TooLarge):
        tus.append(deferred, offset=0, body=io.BytesIO(data))
    assert reload(deferred).offset == 0


def test_a_length_cannot_change_nor_fall_below_the_offset(app, telecaller, call_log):
    data = random_wav(4000)
    known = new_upload(telecaller, call_log, len(data))
    with pytest.raises(LengthConflict) as changed:
        send(known, data[:10], 0, length=len(data) + 1)
    assert changed.value.changed

    deferred = new_upload(telecaller, call_log, None)
    send(deferred, data[:1000], 0)
    with pytest.raises(LengthConflict) as below:
        send(deferred, b"", 1000, length=999)
    assert not below.value.changed


def test_bytes_that_are_not_audio_fail_the_upload_at_once(backend, telecaller, call_log):
    upload = new_upload(telecaller, call_log, 6 * MIB)
    with pytest.raises(NotARecording):
        send(upload, b"%PDF-1.7\n" + os.urandom(6 * MIB - 9), 0)
    upload = reload(upload)
    assert (upload.status, upload.error, upload.offset) == (UploadStatus.FAILED, UploadReason.UNUSABLE, 0)
    with pytest.raises(WrongState):
        send(upload, b"RIFF", 0)


def test_a_short_recording_s_head_is_checked_when_it_ends(app, telecaller, call_log):
    upload = new_upload(telecaller, call_log, 22)
    send(upload, b"hello", 0)  # 5 bytes: too few to tell
    with pytest.raises(NotARecording):
        send(upload, b" world, not audio", 5)  # fewer than 64 bytes, but the whole file
    assert reload(upload).status is UploadStatus.FAILED


def test_an_expired_upload_answers_expired_and_takes_nothing(app, telecaller, call_log):
    upload = new_upload(telecaller, call_log, 4000)
    assert upload.expires_at > utcnow() + timedelta(hours=23)  # TUS_UPLOAD_TTL_HOURS: 24 by default
    send(upload, random_wav(4000)[:100], 0)
    upload = reload(upload)
    upload.expires_at = utcnow() - timedelta(seconds=1)
    db.session.commit()
    with pytest.raises(UploadExpired):
        tus.state(upload)
    with pytest.raises(UploadExpired):
        send(upload, b"x", 100)


def test_every_patch_renews_the_expiry(app, telecaller, call_log):
    app.config["TUS_UPLOAD_TTL_HOURS"] = 1
    data = random_wav(4000)
    upload = new_upload(telecaller, call_log, len(data))
    upload.expires_at = utcnow() + timedelta(minutes=1)
    db.session.commit()
    state = send(upload, data[:100], 0)
    assert state.expires_at > utcnow() + timedelta(minutes=59)


def test_a_terminated_upload_is_gone_with_its_bytes(backend, telecaller, call_log):
    data = random_wav(PART + MIB)
    upload = new_upload(telecaller, call_log, len(data))
    send(upload, data[: PART + 1000], 0)
    tail = ingest.tail_key(upload.prefix, 2)
    assert get_storage().exists(tail)

    tus.terminate(reload(upload))

    upload = reload(upload)
    assert upload.status is UploadStatus.CANCELLED and part_sizes(upload) == []
    assert not get_storage().exists(tail)
    with pytest.raises(UploadExpired):
        tus.state(upload)
    with pytest.raises(UploadExpired):
        send(upload, data[PART + 1000 :], PART + 1000)


def test_a_finished_upload_takes_no_more_bytes_and_cannot_be_terminated(app, telecaller, call_log):
    data = random_wav(4000)
    upload = new_upload(telecaller, call_log, len(data))
    send(upload, data, 0)
    with pytest.raises(WrongState):
        send(upload, b"x", len(data))
    with pytest.raises(WrongState):
        tus.terminate(reload(upload))


def test_the_metadata_is_kept_as_sent(app, telecaller, call_log):
    upload = tus.create(
        telecaller,
        call_log,
        length=100,
        metadata={"filename": "dir/call 1.wav", "call_log_id": str(call_log.id), "empty": None},
    )
    state = tus.state(upload)
    assert state.metadata == {"filename": "dir/call 1.wav", "call_log_id": str(call_log.id), "empty": None}
    assert reload(upload).filename == "call 1.wav"


def test_an_announced_sha256_is_kept_for_the_finishing_job(app, telecaller, call_log):
    upload = new_upload(telecaller, call_log, 10, sha256="AB" * 32)
    assert reload(upload).sha256 == "ab" * 32


def test_an_upload_whose_job_could_not_be_sent_is_sent_when_its_client_asks_again(
    app, telecaller, call_log, monkeypatch
):
    """The last bytes are committed but the broker is down: the PATCH answers that (503), and the HEAD
    the client sends before trying again finds the upload finished and sends its job."""
    data = random_wav(4000)
    upload = new_upload(telecaller, call_log, len(data))
    real_send = jobs.send

    def broker_down(*args, **kwargs):
        raise jobs.BrokerUnavailable("no broker")

    monkeypatch.setattr(jobs, "send", broker_down)
    with pytest.raises(QueueUnavailable):
        send(upload, data, 0)
    upload = reload(upload)
    assert (upload.offset, upload.status, upload.job_id) == (len(data), UploadStatus.RECEIVING, None)

    monkeypatch.setattr(jobs, "send", real_send)
    state = tus.state(upload)

    assert state.finished and state.offset == len(data)
    upload = reload(upload)
    assert upload.status is UploadStatus.PROCESSING and upload.job_id


class OutageBody:
    """A body during which S3 goes down, once `after` bytes were read."""

    def __init__(self, data: bytes, after: int, s3_server):
        self._stream, self._after, self._s3_server = io.BytesIO(data), after, s3_server

    def read(self, size: int = -1) -> bytes:
        if self._stream.tell() >= self._after and self._s3_server.running:
            self._s3_server.stop()
        return self._stream.read(size)


def test_s3_going_down_mid_body_keeps_nothing_and_the_body_can_be_sent_again(
    app, s3_server, telecaller, call_log
):
    app.config.update(TUS_PART_BYTES=PART)
    bucket = s3_server.create_bucket()
    app.config.update(STORAGE_URL=f"s3://{bucket}/edcrm", S3_ENDPOINT_URL=s3_server.endpoint_url)
    app.extensions.pop("edcrm.storage", None)
    data = random_wav(2 * PART + MIB)
    upload = new_upload(telecaller, call_log, len(data))
    send(upload, data[:MIB], 0)

    try:
        with pytest.raises(StorageUnavailable):
            tus.append(upload, offset=MIB, body=OutageBody(data[MIB:], 6 * MIB, s3_server))
    finally:
        s3_server.start()

    upload = reload(upload)
    assert (upload.offset, upload.tail_size, part_sizes(upload)) == (MIB, MIB, [])
    send(upload, data[MIB:], MIB)
    assert assembled(upload) == data


def test_a_patch_to_an_upload_whose_parts_were_pruned_is_told_it_expired(backend, telecaller, call_log):
    data = random_wav(3 * PART)
    upload = new_upload(telecaller, call_log, len(data))
    send(upload, data[: PART + 10], 0)
    upload = reload(upload)
    get_storage().abort_multipart(upload.object_key, upload.multipart_id)  # what pruning does

    with pytest.raises(UploadExpired):
        send(upload, data[PART + 10 :], PART + 10)
    assert reload(upload).offset == PART + 10


def test_a_tail_that_could_not_be_promoted_is_promoted_by_the_next_head(
    app, telecaller, call_log, monkeypatch
):
    """The late Upload-Length is committed, then the storage fails the tail's copy: the PATCH answers
    the outage, and the HEAD the client sends before it tries again finishes the upload."""
    app.config.update(TUS_PART_BYTES=PART)
    data = random_wav(PART + 1000)
    upload = new_upload(telecaller, call_log, None)
    send(upload, data, 0)
    storage = get_storage()
    real_copy_part = type(storage).copy_part

    def failing(self, *args, **kwargs):
        raise StorageUnavailable("the storage is down")

    monkeypatch.setattr(type(storage), "copy_part", failing)
    with pytest.raises(StorageUnavailable):
        tus.append(upload, offset=len(data), body=io.BytesIO(b""), length=len(data))
    upload = reload(upload)
    assert (upload.total_size, upload.tail_size, upload.status) == (len(data), 1000, UploadStatus.RECEIVING)

    monkeypatch.setattr(type(storage), "copy_part", real_copy_part)
    assert tus.state(upload).finished
    upload = reload(upload)
    assert upload.status is UploadStatus.PROCESSING and upload.tail_size == 0
    assert assembled(upload) == data
