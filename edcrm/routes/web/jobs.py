"""The jobs dashboard (admins): the list with filters, counts and pages, one job with its errors and the
record it serves, and the retry / cancel / retry-all-failed buttons (CSRF-protected POSTs)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import flash, g, redirect, render_template, request, url_for
from markupsafe import Markup

from ...auth import page_auth
from ...extensions import db
from ...jobs import BrokerUnavailable, JobStateConflict, ledger, listing
from ...jobs.subjects import IMPORT, Subject, retry_refusal, subject_of
from ...models import CallLog, Job, JobState, LeadImport, RecordingUpload, Role, User
from ...models.job import CANCELLABLE, FINAL, RETRYABLE
from ...permissions import job_for, may_see_import, may_see_upload, visible_jobs
from . import bp
from .session import safe_next

PAGE_SIZE = 50


def _filter_from(args) -> listing.JobFilter:
    """The page's filters from its query string; an unknown state or an overlong name is ignored."""
    try:
        state = JobState(args.get("state")) if args.get("state") else None
    except ValueError:
        state = None

    def name(key: str) -> str | None:
        value = (args.get(key) or "").strip()
        return value if 0 < len(value) <= 120 else None

    return listing.JobFilter(visible_jobs(g.user), state=state, queue=name("queue"), actor=name("actor"))


def filter_args(where: listing.JobFilter, **changes) -> dict[str, Any]:
    """The query string of a filter, with some of its choices changed (None drops one)."""
    args = {"state": where.state.value if where.state else None, "queue": where.queue, "actor": where.actor}
    args.update(changes)
    return {key: value for key, value in args.items() if value}


def subject_link(subject: Subject | None) -> dict | None:
    """What the pages show of the record a job serves: a label and, where a page shows it, a link."""
    return None if subject is None else _link_to(subject)


def _link_to(subject: Subject) -> dict:
    if subject.kind == IMPORT:
        return {"label": f"Import #{subject.id}", "url": url_for("web.show_import", import_id=subject.id)}
    return {"label": f"Recording upload {str(subject.id)[:8]}…", "url": None}


@bp.get("/jobs")
@page_auth(Role.ADMIN)
def list_jobs():
    where = _filter_from(request.args)
    after = listing.Position.decode(request.args.get("after", "")) if request.args.get("after") else None
    jobs, next_position = listing.page(where, PAGE_SIZE, after)
    return render_template(
        "jobs/list.html",
        jobs=[(job, subject_link(subject_of(job))) for job in jobs],
        where=where,
        states=list(JobState),
        state_counts=listing.counts_by_state(where),
        queue_counts=listing.counts_by_queue(where),
        actors=listing.actor_names(where.scope),
        next_url=url_for("web.list_jobs", **filter_args(where), after=next_position.encode())
        if next_position
        else None,
        first_page=after is None,
        filter_args=filter_args,
        retryable=RETRYABLE,
        cancellable=CANCELLABLE,
        # Failed or cancelled jobs whose retry could only end cancelled: no button, the reason instead.
        refusals={
            job.id: reason for job in jobs if job.state in RETRYABLE and (reason := retry_refusal(job))
        },
    )


def _served(job: Job) -> dict | None:
    """The record job serves, as the job page shows it (None once the record is gone)."""
    subject = subject_of(job)
    if subject is None:
        return None
    link = _link_to(subject)
    if subject.kind == IMPORT:
        lead_import = db.session.get(LeadImport, subject.id) if isinstance(subject.id, int) else None
        if lead_import is None or not may_see_import(g.user, lead_import):
            return {**link, "url": None, "details": "The import no longer exists."}
        return {**link, "details": f"{lead_import.filename}: {lead_import.status.value}"}
    upload = db.session.get(RecordingUpload, str(subject.id))
    if upload is None or not may_see_upload(g.user, upload):
        return {**link, "details": "The upload no longer exists."}
    if upload.recording_id is not None:  # what the job made: its audio
        link = {
            "label": f"Recording #{upload.recording_id}",
            "url": url_for("web.recording_file", recording_id=upload.recording_id),
        }
    call_log = db.session.get(CallLog, upload.call_log_id) if upload.call_log_id else None
    details = f"upload {upload.id[:8]}… of {upload.filename}, {upload.status.value}"
    if call_log is not None:
        telecaller = db.session.get_one(User, call_log.telecaller_id)
        details += f", for call #{call_log.id} by {telecaller.email}"
    if upload.error:
        details += f": {upload.error}"
    return {**link, "details": details}


@bp.get("/jobs/<job_id>")
@page_auth(Role.ADMIN)
def show_job(job_id: str):
    job = job_for(g.user, job_id)
    refusal = retry_refusal(job) if job.state in RETRYABLE else None
    return render_template(
        "jobs/show.html",
        job=job,
        served=_served(job),
        final=job.state in FINAL,
        retryable=job.state in RETRYABLE and refusal is None,
        refusal=refusal,
        cancellable=job.state in CANCELLABLE,
    )


@bp.get("/jobs/<job_id>/state")
@page_auth(Role.ADMIN)
def job_state(job_id: str):
    """The job page's polling endpoint: it reloads itself when the state changes."""
    job = job_for(g.user, job_id)
    body = {"state": job.state.value, "attempts": job.attempts, "final": job.state in FINAL}
    return body, 200, {"Cache-Control": "no-store"}


def _back(default: str):
    return redirect(safe_next(request.form.get("next")) or default)


def _job_link(job: Job) -> Markup:
    return Markup('<a href="{}">{}</a>').format(url_for("web.show_job", job_id=job.id), job.actor)


@contextmanager
def _refusal_flashed(not_done: str) -> Iterator[None]:
    """A button the ledger refuses (the job's state, the job queue down) is flashed, `not_done: why`,
    on the page the admin is sent back to: the page's answer, where the API has its status."""
    try:
        yield
    except (JobStateConflict, BrokerUnavailable) as error:
        flash(f"{not_done}: {error}", "error")


@bp.post("/jobs/<job_id>/retry")
@page_auth(Role.ADMIN)
def retry_job(job_id: str):
    job = job_for(g.user, job_id)
    with _refusal_flashed("Not retried"):
        ledger.retry(job.id)
        flash(Markup("Job {} is queued again.").format(_job_link(job)), "success")
    return _back(url_for("web.show_job", job_id=job.id))


@bp.post("/jobs/<job_id>/cancel")
@page_auth(Role.ADMIN)
def cancel_job(job_id: str):
    job = job_for(g.user, job_id)
    with _refusal_flashed("Not cancelled"):
        ledger.cancel(job.id)
        flash(Markup("Job {} is cancelled.").format(_job_link(job)), "success")
    return _back(url_for("web.show_job", job_id=job.id))


@bp.post("/jobs/retry-failed")
@page_auth(Role.ADMIN)
def retry_failed_jobs():
    where = _filter_from(request.form)
    with _refusal_flashed("Stopped"):
        report = listing.retry_failed(where)
        message = f"{len(report.retried)} failed job(s) queued again."
        if report.remaining:
            message += f" {report.remaining} more are failed: press the button again for them."
        flash(message, "success" if report.retried else "info")
    return redirect(url_for("web.list_jobs", **filter_args(where)))
