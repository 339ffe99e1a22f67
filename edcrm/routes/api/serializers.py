"""Records as the API (and the pages beside it) answer them: plain dicts of the shapes in
edcrm.routes.api.schemas, with the URLs a route knows. Models keep no HTTP; this is where they meet it."""

from __future__ import annotations

from typing import Any

from flask import url_for

from ...jobs.subjects import IMPORT, subject_of
from ...models import CallLog, Job, JobError, Lead, LeadImport, Recording, RecordingUpload, User
from ...models.recording import UploadKind, UploadStatus, public_error
from ...models.types import isoformat


def user_json(user: User) -> dict[str, Any]:
    return {"id": user.id, "email": user.email, "role": user.role.value, "branch_id": user.branch_id}


def lead_json(lead: Lead) -> dict[str, Any]:
    return {
        "id": lead.id,
        "student_name": lead.student_name,
        "phone_number": lead.phone_number,
        "email": lead.email,
        "city": lead.city,
        "status": lead.status.value,
        "telecaller_id": lead.telecaller_id,
        "import_id": lead.import_id,
    }


def recording_json(recording: Recording) -> dict[str, Any]:
    return {
        "id": recording.id,
        "size": recording.size,
        "content_type": recording.content_type,
        "sha256": recording.sha256,
        "duration_seconds": recording.duration_seconds,
        "download_url": url_for("api.recording_content", call_log_id=recording.call_log_id),
    }


def call_log_json(call_log: CallLog) -> dict[str, Any]:
    recording = call_log.recording
    return {
        "id": call_log.id,
        "lead_id": call_log.lead_id,
        "telecaller_id": call_log.telecaller_id,
        "outcome": call_log.outcome.value,
        "duration_seconds": call_log.duration_seconds,
        "created_at": isoformat(call_log.created_at),
        "recording": recording_json(recording) if recording is not None else None,
    }


def import_record(lead_import: LeadImport) -> dict[str, Any]:
    """The contract's import object but for `errors_url`: what a page shows of an import."""
    return {
        "id": lead_import.id,
        "filename": lead_import.filename,
        "status": lead_import.status.value,
        "total_rows": lead_import.total_rows,
        "processed_rows": lead_import.processed_rows,
        "successful_rows": lead_import.successful_rows,
        "failed_rows": lead_import.failed_rows,
        "duplicate_rows": lead_import.duplicate_rows,
        "distribution": {str(key): value for key, value in (lead_import.distribution or {}).items()},
        "error": lead_import.error,
        "created_at": isoformat(lead_import.created_at),
        "finished_at": isoformat(lead_import.finished_at),
    }


def import_json(lead_import: LeadImport) -> dict[str, Any]:
    """The contract's import object."""
    errors_url = url_for("api.get_import_errors", import_id=lead_import.id)
    return {**import_record(lead_import), "errors_url": errors_url}


def upload_progress_json(upload: RecordingUpload) -> dict[str, Any]:
    received = upload.received_indexes()
    return {"upload_id": upload.id, "received": received, "missing": upload.missing_indexes(received)}


def upload_json(upload: RecordingUpload) -> dict[str, Any]:
    received: list[int]
    missing: list[int]
    if upload.kind in (UploadKind.SINGLE, UploadKind.TUS):  # no chunks: tus has its offset
        received, missing = [], []
    elif upload.status is UploadStatus.COMPLETED:  # every chunk arrived; their rows went with them
        received, missing = list(range(upload.expected_chunks)), []
    else:
        received = upload.received_indexes()
        missing = upload.missing_indexes(received)
    return {
        "upload_id": upload.id,
        "status": upload.status.value,
        "received": received,
        "missing": missing,
        "call_log_id": upload.call_log_id,
        "recording_id": upload.recording_id,
        "job_id": upload.job_id,
        "error": public_error(upload.status, upload.error),
        "created_at": isoformat(upload.created_at),
        "updated_at": isoformat(upload.updated_at),
        **_tus_progress(upload),
    }


def _tus_progress(upload: RecordingUpload) -> dict[str, Any]:
    """A tus upload's offset and length (null while deferred); nothing for the other kinds."""
    if upload.kind is not UploadKind.TUS:
        return {}
    return {"offset": upload.offset, "length": upload.total_size}


def job_error_json(error: JobError) -> dict[str, Any]:
    return {
        "attempt": error.attempt,
        "at": isoformat(error.at),
        "error": error.error,
        "traceback": error.traceback,
    }


def job_record(job: Job) -> dict[str, Any]:
    """A job as the ledger keeps it (the CLI prints this); job_json adds where to find it."""
    return {
        "id": job.id,
        "actor": job.actor,
        "queue": job.queue,
        "args": job.args,
        "kwargs": job.kwargs,
        "state": job.state.value,
        "attempts": job.attempts,
        "max_retries": job.max_retries,
        "branch_id": job.branch_id,
        "errors": [job_error_json(error) for error in job.errors],
        "enqueued_at": isoformat(job.enqueued_at),
        "scheduled_at": isoformat(job.scheduled_at),
        "started_at": isoformat(job.started_at),
        "finished_at": isoformat(job.finished_at),
    }


def job_json(job: Job) -> dict[str, Any]:
    """The contract's job, with where to find it and the record it serves."""
    data = {**job_record(job), "url": url_for("api.get_job", job_id=job.id)}
    subject = subject_of(job)
    if subject is None:
        data["subject"] = None
    elif subject.kind == IMPORT:
        url = url_for("api.get_import", import_id=subject.id)
        data["subject"] = {"kind": subject.kind, "id": subject.id, "url": url}
    else:
        url = url_for("api.get_upload", upload_id=subject.id)
        data["subject"] = {"kind": subject.kind, "id": subject.id, "url": url}
    return data
