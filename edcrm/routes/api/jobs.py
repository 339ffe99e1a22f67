"""The job ledger for admins: list (filters, counts, pages), show, retry, cancel, retry all failed.

An admin sees their branch's jobs and the system's (edcrm.permissions.visible_jobs)."""

from __future__ import annotations

from flask import g, request, url_for

from ...jobs import BrokerUnavailable, JobStateConflict, RetryRefused, ledger, listing
from ...jobs.subjects import IMPORT, subject_of
from ...models import Job, JobState, Role
from ...permissions import api_auth, job_for, visible_jobs
from ..errors import ApiError
from . import bp
from .inputs import Fields, optional_json_object
from .pagination import DEFAULT_LIMIT, MAX_LIMIT, cursor_param, decode_job_cursor, encode_job_cursor


def job_json(job: Job) -> dict:
    """The contract's job, with where to find it and the record it serves."""
    data = {**job.to_dict(), "url": url_for("api.get_job", job_id=job.id)}
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


def job_filter(fields: Fields, *, with_state: bool = True) -> listing.JobFilter:
    """?state=&queue=&actor= (or the same fields of a JSON body), within what the caller may see."""
    return listing.JobFilter(
        visible_jobs(g.user),
        state=fields.choice("state", JobState, required=False) if with_state else None,
        queue=fields.string("queue", max_length=120, required=False),
        actor=fields.string("actor", max_length=120, required=False),
    )


def _conflict(error: JobStateConflict) -> ApiError:
    if isinstance(error, RetryRefused):  # the right state, but a retry could only end cancelled
        return ApiError(409, "not_retryable", error.reason, state=error.job.state.value)
    return ApiError(409, "wrong_state", str(error), state=error.job.state.value)


def _unavailable(error: BrokerUnavailable) -> ApiError:
    return ApiError(503, "queue_unavailable", str(error))


@bp.get("/jobs")
@api_auth(Role.ADMIN)
def list_jobs():
    fields = Fields(request.args, text=True)
    where = job_filter(fields)
    limit = fields.integer("limit", minimum=1, maximum=MAX_LIMIT, required=False, default=DEFAULT_LIMIT)
    after = cursor_param(fields, decode_job_cursor)
    fields.check()
    jobs, next_position = listing.page(where, limit, after, with_errors=True)
    return {
        "items": [job_json(job) for job in jobs],
        "counts": listing.counts_by_state(where),
        "queues": listing.counts_by_queue(where),
        "next": encode_job_cursor(next_position) if next_position else None,
    }


@bp.get("/jobs/<job_id:job_id>")
@api_auth(Role.ADMIN)
def get_job(job_id: str):
    return job_json(job_for(g.user, job_id))


@bp.post("/jobs/<job_id:job_id>/retry")
@api_auth(Role.ADMIN)
def retry_job(job_id: str):
    job = job_for(g.user, job_id)
    try:
        return job_json(ledger.retry(job.id)), 202
    except JobStateConflict as error:
        raise _conflict(error) from None
    except BrokerUnavailable as error:
        raise _unavailable(error) from None


@bp.post("/jobs/<job_id:job_id>/cancel")
@api_auth(Role.ADMIN)
def cancel_job(job_id: str):
    job = job_for(g.user, job_id)
    try:
        return job_json(ledger.cancel(job.id)), 202
    except JobStateConflict as error:
        raise _conflict(error) from None


@bp.post("/jobs/retry-failed")
@api_auth(Role.ADMIN)
def retry_failed_jobs():
    """Retry every failed job of a filter ({"queue", "actor"}, both optional; none: all of them)."""
    fields = Fields(optional_json_object())
    where = job_filter(fields, with_state=False)  # failed ones, whatever else a body says
    fields.check()
    try:
        report = listing.retry_failed(where)
    except BrokerUnavailable as error:
        raise _unavailable(error) from None
    return {"retried": len(report.retried), "job_ids": report.retried, "remaining": report.remaining}, 202
