"""`flask edcrm jobs …`: what an operator sees and can do from a shell."""

from __future__ import annotations

import io
import json

from edcrm.actors.maintenance import ping
from edcrm.extensions import db
from edcrm.models import Job, JobState, RecordingUpload, UploadStatus
from edcrm.recordings import uploads
from tests.support.audio_samples import wav
from tests.support.recordings import make_call_log


def state_of(app, job_id: str) -> JobState:
    with app.app_context():
        return db.session.get(Job, job_id).state


def test_ping_waits_for_the_worker_and_prints_the_outcome(app, runner, stub_worker):
    result = runner.invoke(args=["edcrm", "jobs", "ping", "--wait", "10"])
    assert result.exit_code == 0, result.output
    job_id, outcome = result.output.split()
    assert outcome == "succeeded"
    assert state_of(app, job_id) is JobState.SUCCEEDED


def test_a_failing_ping_ends_failed(app, runner, stub_worker):
    result = runner.invoke(args=["edcrm", "jobs", "ping", "--fail", "--wait", "10"])
    assert result.exit_code == 0, result.output
    assert result.output.split()[1] == "failed"


def test_cancel_then_retry_then_show(app, runner, stub_broker):
    with app.app_context():
        job_id = ping.send().message_id

    result = runner.invoke(args=["edcrm", "jobs", "cancel", job_id])
    assert (result.exit_code, result.output.strip()) == (0, f"{job_id} cancelled")

    again = runner.invoke(args=["edcrm", "jobs", "cancel", job_id])
    assert again.exit_code == 1
    assert "cannot cancel a cancelled job" in again.output

    result = runner.invoke(args=["edcrm", "jobs", "retry", job_id])
    assert (result.exit_code, result.output.strip()) == (0, f"{job_id} enqueued")

    shown = json.loads(runner.invoke(args=["edcrm", "jobs", "show", job_id]).output)
    assert (shown["id"], shown["actor"], shown["state"]) == (job_id, "ping", "enqueued")


def test_unknown_job_is_a_clear_error(runner):
    result = runner.invoke(args=["edcrm", "jobs", "retry", "nope"])
    assert result.exit_code == 1
    assert "nope" in result.output


def test_list_filters_by_state_newest_first(app, runner, stub_broker):
    with app.app_context():
        first, second = ping.send().message_id, ping.send().message_id
    runner.invoke(args=["edcrm", "jobs", "cancel", first])

    lines = runner.invoke(args=["edcrm", "jobs", "list"]).output.splitlines()
    assert [json.loads(line)["id"] for line in lines] == [second, first]
    cancelled = runner.invoke(args=["edcrm", "jobs", "list", "--state", "cancelled"]).output.splitlines()
    assert [json.loads(line)["id"] for line in cancelled] == [first]


def test_cancelling_a_recording_job_from_the_shell_ends_its_upload(app, runner, stub_broker, telecaller):
    with app.app_context():
        call_log = make_call_log(telecaller.branch, telecaller)
        upload = uploads.create_session(telecaller, call_log, filename="call.wav", expected_chunks=1)
        uploads.store_chunk(upload, 0, io.BytesIO(wav(0.5)))
        job_id, upload_id = uploads.complete(upload), upload.id

    result = runner.invoke(args=["edcrm", "jobs", "cancel", job_id])
    assert (result.exit_code, result.output.strip()) == (0, f"{job_id} cancelled")
    with app.app_context():
        ended = db.session.get(RecordingUpload, upload_id)
        assert (ended.status, ended.received_indexes()) == (UploadStatus.CANCELLED, [0])
