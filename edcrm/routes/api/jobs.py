"""The job ledger for admins: list (filters, counts, pages), show, retry, cancel, retry all failed.

An admin sees their branch's jobs and the system's (edcrm.permissions.visible_jobs)."""

from __future__ import annotations

from typing import Any

from flask import g

from ...auth import api_auth
from ...jobs import ledger, listing
from ...models import Role
from ...permissions import job_for, visible_jobs
from . import bp
from .pagination import encode_job_cursor
from .schemas.base import Error
from .schemas.jobs import Job, JobList, JobQuery, RetryFilter, RetryReport
from .serializers import job_json
from .spec import FORBIDDEN, JSON_BODY, NOT_FOUND, UNAUTHORIZED, VALIDATION_FAILED, operation, unavailable

_ADMIN_ANSWERS: dict[str, Any] = {"HTTP_401": UNAUTHORIZED, "HTTP_403": FORBIDDEN}
_ONE_JOB: dict[str, Any] = {**_ADMIN_ANSWERS, "HTTP_404": NOT_FOUND}


@bp.get("/jobs")
@api_auth(Role.ADMIN)
@operation(
    "listJobs",
    "jobs",
    HTTP_200=(JobList, "A page of jobs, and the counts."),
    HTTP_422=VALIDATION_FAILED,
    **_ADMIN_ANSWERS,
)
def list_jobs(query: JobQuery):
    """Jobs newest first, filtered, with counts per state and per queue (admins)"""
    where = listing.JobFilter(visible_jobs(g.user), state=query.state, queue=query.queue, actor=query.actor)
    after = query.cursor.after() if query.cursor else None
    jobs, next_position = listing.page(where, query.limit, after, with_errors=True)
    return {
        "items": [job_json(job) for job in jobs],
        "counts": listing.counts_by_state(where),
        "queues": listing.counts_by_queue(where),
        "next": encode_job_cursor(next_position) if next_position else None,
    }


@bp.get("/jobs/<job_id:job_id>")
@api_auth(Role.ADMIN)
@operation(
    "getJob",
    "jobs",
    HTTP_200=(Job, "The job."),
    HTTP_405=(
        Error,
        "`retry-failed` is no job id: `/api/jobs/retry-failed` takes POST only (`method_not_allowed`, "
        "with `Allow`).",
    ),
    **_ONE_JOB,
)
def get_job(job_id: str):
    """A job with its errors (admins of its branch)"""
    return job_json(job_for(g.user, job_id))


@bp.post("/jobs/<job_id:job_id>/retry")
@api_auth(Role.ADMIN)
@operation(
    "retryJob",
    "jobs",
    HTTP_202=(Job, "The job, enqueued again."),
    HTTP_409=(
        Error,
        "The job is not failed or cancelled (`wrong_state`, with `state`), or a retry could only end "
        "cancelled, e.g. the job of a cancelled import (`not_retryable`, with `state`; the message "
        "says why).",
    ),
    **_ONE_JOB,
    HTTP_503=unavailable("queue"),
)
def retry_job(job_id: str):
    """Send a failed or cancelled job again, with a fresh retry budget"""
    job = job_for(g.user, job_id)
    return job_json(ledger.retry(job.id)), 202


@bp.post("/jobs/<job_id:job_id>/cancel")
@api_auth(Role.ADMIN)
@operation(
    "cancelJob",
    "jobs",
    HTTP_202=(Job, "The job, cancelled."),
    HTTP_409=(Error, "The job is not enqueued or retrying (`wrong_state`, with `state`)."),
    **_ONE_JOB,
)
def cancel_job(job_id: str):
    """Cancel an enqueued or retrying job: its message is skipped when it comes up"""
    job = job_for(g.user, job_id)
    return job_json(ledger.cancel(job.id)), 202


@bp.post("/jobs/retry-failed")
@api_auth(Role.ADMIN)
@operation(
    "retryFailedJobs",
    "jobs",
    HTTP_202=(RetryReport, "What was retried."),
    **_ADMIN_ANSWERS,
    **JSON_BODY,
    HTTP_503=unavailable("queue"),
)
def retry_failed_jobs(json: RetryFilter):
    """Retry the failed jobs of a filter (at most 1,000 a call; an addition to the contract)"""
    # {"queue", "actor"}, both optional (none: all of them); failed ones, whatever else a body says.
    where = listing.JobFilter(visible_jobs(g.user), state=None, queue=json.queue, actor=json.actor)
    report = listing.retry_failed(where)
    return {"retried": len(report.retried), "job_ids": report.retried, "remaining": report.remaining}, 202
