"""`flask edcrm import-csv FILE --branch NAME --telecallers EMAIL,EMAIL [--wait]`: an operator's import.

The same path as an admin's upload (edcrm.imports.upload), with no admin behind it (created_by is
empty). Without REDIS_URL there is no worker process to hand the job to, so the command runs the
import itself, in this process, and waits for it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click
import dramatiq
import sqlalchemy as sa

from ..extensions import db
from ..imports.report import iter_error_report
from ..imports.upload import ImportRejected, start_branch_import
from ..jobs.broker import current_broker, is_in_memory
from ..jobs.embedded import stop_worker
from ..models import Branch, ImportStatus, LeadImport, Role, User
from .group import edcrm_cli

POLL_SECONDS = 0.5


def _branch(name: str) -> Branch:
    branch = db.session.execute(sa.select(Branch).filter_by(name=name.strip())).scalar_one_or_none()
    if branch is None:
        raise click.BadParameter(f"no branch named {name!r}", param_hint="--branch")
    return branch


def _telecaller_ids(branch: Branch, emails: str) -> list[int]:
    """The ids of the comma-separated emails; every email that is not an active telecaller of the
    branch is named in one error."""
    wanted = list(dict.fromkeys(User.normalize_email(e) for e in emails.split(",") if e.strip()))
    if not wanted:
        raise click.BadParameter("name at least one telecaller's email", param_hint="--telecallers")
    users = {u.email: u for u in db.session.execute(sa.select(User).where(User.email.in_(wanted))).scalars()}
    problems = []
    for email in wanted:
        user = users.get(email)
        if user is None:
            problems.append(f"{email} (no such user)")
        elif user.branch_id != branch.id or user.role != Role.TELECALLER:
            problems.append(f"{email} (not a telecaller of {branch.name})")
        elif not user.active:
            problems.append(f"{email} (deactivated)")
    if problems:
        raise click.BadParameter("cannot take leads: " + ", ".join(problems), param_hint="--telecallers")
    return [users[email].id for email in wanted]


def _current(import_id: int) -> LeadImport:
    db.session.rollback()  # end the transaction: see what the worker committed since
    lead_import = db.session.get(LeadImport, import_id)
    if lead_import is None:
        raise click.ClickException(f"import {import_id} was deleted")
    return lead_import


def _wait(import_id: int) -> LeadImport:
    """Poll the import until it is over, with a progress bar of its processed rows (on stderr)."""
    lead_import = _current(import_id)
    label = f"Importing {lead_import.filename}"
    stderr = sys.stderr  # the summary alone goes to stdout, for scripts
    with click.progressbar(length=1, label=label, show_pos=True, show_percent=True, file=stderr) as bar:
        shown = 0
        while True:
            # The total is known once the worker has counted the rows; until then the bar waits at 0.
            bar.length = max(lead_import.total_rows, lead_import.processed_rows, 1)
            if lead_import.processed_rows > shown:
                bar.update(lead_import.processed_rows - shown)
                shown = lead_import.processed_rows
            if lead_import.is_final:
                return lead_import
            time.sleep(POLL_SECONDS)
            lead_import = _current(import_id)


def _summary(lead_import: LeadImport) -> str:
    lines = [
        f"import {lead_import.id} {lead_import.status.value}: {lead_import.total_rows} rows, "
        f"{lead_import.successful_rows} imported, {lead_import.failed_rows} invalid, "
        f"{lead_import.duplicate_rows} duplicates"
    ]
    if lead_import.error:
        lines.append(f"error: {lead_import.error}")
    distribution = {int(k): v for k, v in (lead_import.distribution or {}).items()}
    if distribution:
        emails = dict(
            db.session.execute(sa.select(User.id, User.email).where(User.id.in_(distribution))).all()
        )
        lines.append("leads per telecaller:")
        lines.extend(f"  {emails.get(i, f'user {i}')}: {n}" for i, n in distribution.items())
    return "\n".join(lines)


@edcrm_cli.command("import-csv")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--branch", "branch_name", required=True, help="The branch's name.")
@click.option("--telecallers", required=True, help="Comma-separated emails of the branch's telecallers.")
@click.option("--wait", is_flag=True, help="Show the import's progress and wait until it is over.")
@click.option(
    "--errors-to",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="With --wait: write the error report (the rejected rows) to this CSV file.",
)
def import_csv(file: Path, branch_name: str, telecallers: str, wait: bool, errors_to: Path | None):
    """Import a CSV of leads into a branch, shared round-robin between telecallers.

    Exits 1 if the import ends failed or cancelled.
    """
    branch = _branch(branch_name)
    telecaller_ids = _telecaller_ids(branch, telecallers)

    broker = current_broker()
    worker = None
    if is_in_memory(broker):
        # No REDIS_URL: no worker process would ever see this job, so run it here.
        wait = True
        worker = dramatiq.Worker(broker, queues={"csv_import"}, worker_threads=1, worker_timeout=100)
        worker.start()
    try:
        with file.open("rb") as stream:
            try:
                lead_import = start_branch_import(branch.id, stream, file.name, telecaller_ids)
            except ImportRejected as error:
                raise click.ClickException(error.message) from None
        click.echo(f"import {lead_import.id} queued (job {lead_import.job_id})")
        if not wait:
            return
        lead_import = _wait(lead_import.id)
    finally:
        if worker is not None:
            stop_worker(broker, worker)

    click.echo(_summary(lead_import))
    if errors_to is not None:
        _write_error_report(lead_import, errors_to)
    if lead_import.status != ImportStatus.COMPLETED:
        raise SystemExit(1)


def _write_error_report(lead_import: LeadImport, path: Path) -> None:
    with path.open("w", encoding="utf-8", newline="") as out:
        for piece in iter_error_report(lead_import):
            out.write(piece.decode("utf-8") if isinstance(piece, bytes) else piece)
    click.echo(f"error report written to {path}")
