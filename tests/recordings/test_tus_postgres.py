"""The tus domain on PostgreSQL (its JSONB, bytea and conditional UPDATEs, and the advisory lock held
through every PATCH) with the recordings actor to the end: the same Recording as on SQLite."""

from __future__ import annotations

import hashlib
import io

import pytest

from edcrm.extensions import db
from edcrm.models import CallLog, RecordingUpload, UploadStatus, User
from edcrm.recordings import tus
from tests.recordings import test_upload_lock
from tests.recordings.test_tus_append import MIB, PART, random_wav, send
from tests.support.audio_samples import amr
from tests.support.jobs import run_jobs

pg_upload = test_upload_lock.pg_upload  # the fixture


@pytest.mark.parametrize("kind", ["wav", "amr"])
def test_an_upload_sent_in_patches_on_postgresql_becomes_its_recording(pg_app, pg_upload, pg_worker, kind):
    pg_app.config.update(TUS_PART_BYTES=PART)
    existing, _ = pg_upload  # its call log and telecaller, on PostgreSQL
    telecaller = db.session.get_one(User, existing.telecaller_id)
    call_log = db.session.get_one(CallLog, existing.call_log_id)
    data = random_wav(2 * PART + MIB) if kind == "wav" else amr(120.0)
    step = 3 * MIB if kind == "wav" else 50_000

    upload = tus.create(telecaller, call_log, length=None, metadata={})
    for start in range(0, len(data), step):
        send(upload, data[start : start + step], start)
    tus.append(upload, offset=len(data), body=io.BytesIO(b""), length=len(data))

    run_jobs(*pg_worker, "recordings")

    upload = db.session.get_one(RecordingUpload, upload.id)
    assert upload.status is UploadStatus.COMPLETED
    recording = db.session.get_one(CallLog, call_log.id).recording
    assert (recording.size, recording.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    if kind == "amr":
        assert (recording.content_type, recording.duration_seconds) == ("audio/amr", 120.0)
