"""tus concatenation (tus-js-client's parallelUploads): partial uploads, then a final one made of them
within the storage, on local storage and on moto's S3 server over HTTP."""

from __future__ import annotations

import hashlib
import os

import pytest

from edcrm.extensions import db
from edcrm.models import Role, UploadStatus
from edcrm.models.recording import ConcatRole
from edcrm.recordings import digest, tus
from edcrm.recordings.errors import ConcatInvalid, NotARecording, WrongState
from edcrm.storage import get_storage
from tests.recordings import test_tus_append
from tests.recordings.test_tus_append import (
    MIB,
    PART,
    assembled,
    part_sizes,
    random_wav,
    reload,
    send,
)
from tests.support.people import make_user
from tests.support.recordings import make_call_log

backend = test_tus_append.backend  # the fixture: local storage, then S3


def partial(telecaller, data: bytes, *, finish: bool = True):
    upload = tus.create(telecaller, None, length=len(data), metadata={}, concat=ConcatRole.PARTIAL)
    if finish:
        middle = len(data) // 2
        send(upload, data[:middle], 0)
        send(upload, data[middle:], middle)
    return reload(upload)


def test_a_final_upload_is_its_partials_concatenated(backend, branch, telecaller):
    data = random_wav(2 * PART + 3 * MIB + 7)
    cut = PART + 2 * MIB  # the final's second part spans both partials
    first, second = partial(telecaller, data[:cut]), partial(telecaller, data[cut:])
    assert tus.state(first).finished and first.status is UploadStatus.RECEIVING
    call_log = make_call_log(branch, telecaller)

    final = tus.create(
        telecaller,
        call_log,
        length=None,
        metadata={"filename": "call.wav", "call_log_id": str(call_log.id)},
        concat=ConcatRole.FINAL,
        partials=[first, second],
    )

    state = tus.state(final)
    assert (state.offset, state.length, state.finished) == (len(data), len(data), True)
    assert (state.concat, state.partial_ids) == (ConcatRole.FINAL, [first.id, second.id])
    final = reload(final)
    assert final.status is UploadStatus.PROCESSING and final.job_id
    assert final.object_key == f"recordings/{call_log.id}/{final.id}"
    assert part_sizes(final) == [PART, PART, len(data) - 2 * PART]
    assert final.head == data[:64]
    if digest.available():  # the first partial's hash, for the finishing job to go on from
        assert final.hashed_bytes == cut
        assert digest.resume(final.hash_state).hexdigest() == hashlib.sha256(data[:cut]).hexdigest()
    assert assembled(final) == data
    with pytest.raises(WrongState):
        send(final, b"x", len(data))


def test_partials_of_less_than_a_part_make_a_final_upload(backend, branch, telecaller):
    data = random_wav(3 * MIB)
    pieces = [partial(telecaller, data[i : i + MIB]) for i in range(0, len(data), MIB)]
    final = tus.create(
        telecaller,
        make_call_log(branch, telecaller),
        length=None,
        metadata={},
        concat=ConcatRole.FINAL,
        partials=pieces,
    )
    assert part_sizes(final) == [len(data)]
    assert assembled(final) == data


def test_a_final_upload_needs_finished_partials_of_the_same_telecaller(app, branch, telecaller):
    data = random_wav(200_000)
    call_log = make_call_log(branch, telecaller)
    done, unfinished = partial(telecaller, data[:100_000]), partial(telecaller, data[100_000:], finish=False)
    someone_else = make_user(branch, Role.TELECALLER, email="other@kochi.test")
    theirs = partial(someone_else, data[100_000:])

    for partials in ([done, unfinished], [done, theirs], []):
        with pytest.raises(ConcatInvalid):
            tus.create(
                telecaller, call_log, length=None, metadata={}, concat=ConcatRole.FINAL, partials=partials
            )
    assert get_storage().exists(done.object_key)  # completed, and still there for another final


def test_a_final_upload_that_does_not_start_with_audio_is_refused(app, branch, telecaller):
    first = partial(telecaller, b"PK\x03\x04" + os.urandom(100))
    with pytest.raises(NotARecording):
        tus.create(
            telecaller,
            make_call_log(branch, telecaller),
            length=None,
            metadata={},
            concat=ConcatRole.FINAL,
            partials=[first],
        )
    assert reload(first).status is UploadStatus.RECEIVING
    db.session.rollback()
