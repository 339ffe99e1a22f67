"""`flask edcrm jobs …`: inspect, retry, cancel and prune the job ledger; ping the workers."""

from __future__ import annotations

import json
import time

import click
import sqlalchemy as sa
from flask import current_app

from ..extensions import db
from ..jobs import BrokerUnavailable, JobNotFound, JobStateConflict, ledger
from ..models import Job, JobState
from ..routes.api.serializers import job_record
from .group import edcrm_cli


@edcrm_cli.group("jobs")
def jobs_cli():
    """The job ledger: list, show, retry, cancel, prune; ping the workers."""


def _fail(exc: Exception) -> None:
    raise click.ClickException(str(exc)) from exc


@jobs_cli.command("list")
@click.option("--state", type=click.Choice([s.value for s in JobState]))
@click.option("--queue")
@click.option("--actor")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
def list_jobs(state, queue, actor, limit):
    """Newest jobs first, one JSON object a line."""
    filters = []
    if state:
        filters.append(Job.state == JobState(state))
    if queue:
        filters.append(Job.queue == queue)
    if actor:
        filters.append(Job.actor == actor)
    stmt = sa.select(Job).where(*filters).order_by(Job.enqueued_at.desc()).limit(limit)
    for job in db.session.execute(stmt).scalars():
        click.echo(json.dumps(job_record(job)))


@jobs_cli.command("show")
@click.argument("job_id")
def show(job_id):
    try:
        click.echo(json.dumps(job_record(ledger.get(job_id)), indent=2))
    except JobNotFound as exc:
        _fail(exc)


@jobs_cli.command("retry")
@click.argument("job_id")
def retry(job_id):
    """Send a failed or cancelled job again (refused, with the reason, where it could only end
    cancelled: its import failed or was cancelled, its recording upload is gone)."""
    try:
        click.echo(f"{ledger.retry(job_id).id} {JobState.ENQUEUED.value}")
    except (JobNotFound, JobStateConflict, BrokerUnavailable) as exc:
        _fail(exc)


@jobs_cli.command("cancel")
@click.argument("job_id")
def cancel(job_id):
    """Cancel an enqueued or retrying job (a recording upload it serves ends cancelled, its chunks
    kept for a retry)."""
    try:
        click.echo(f"{ledger.cancel(job_id).id} {JobState.CANCELLED.value}")
    except (JobNotFound, JobStateConflict) as exc:
        _fail(exc)


@jobs_cli.command("prune")
def prune():
    """Delete finished jobs past their retention now (the scheduler does it hourly)."""
    deleted = ledger.prune(
        retention_days=current_app.config["JOB_RETENTION_DAYS"],
        failed_retention_days=current_app.config["FAILED_JOB_RETENTION_DAYS"],
    )
    click.echo(f"pruned {deleted} job(s)")


@jobs_cli.command("ping")
@click.option("--fail", is_flag=True, help="Make the job fail, to check retries and alerting.")
@click.option("--wait", "wait_seconds", type=float, default=0, help="Seconds to wait for a final state.")
def ping(fail, wait_seconds):
    """Send a no-op job to the workers and print its id (and, with --wait, its final state)."""
    # Not at the top: create_app imports edcrm.cli before it configures the broker, the actors after.
    from ..actors.maintenance import ping as ping_actor

    message = ping_actor.send(fail=fail)
    click.echo(message.message_id)
    if not wait_seconds:
        return
    deadline = time.monotonic() + wait_seconds
    final = {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}
    while time.monotonic() < deadline:
        db.session.expire_all()
        job = db.session.get(Job, message.message_id)
        if job is not None and job.state in final:
            click.echo(job.state.value)
            return
        time.sleep(0.2)
    raise click.ClickException(f"job {message.message_id} did not finish within {wait_seconds}s")
