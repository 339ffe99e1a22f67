"""Starting a lead import: check the telecallers, stream the CSV to storage, queue the job.

The API, the page and the CLI all call `start_import` (or `start_branch_import`); its refusals are
`ImportRejected` errors that say what happened, and each caller answers them in its own terms
(edcrm.routes.errors for HTTP, a CLI error).

The uploaded file is copied to storage block by block through a counter that stops at MAX_CSV_BYTES,
so it is never in memory whole; whatever goes wrong before the job is queued, nothing is left behind.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence

import sqlalchemy as sa
from flask import current_app
from werkzeug.utils import secure_filename

from .. import jobs, metrics
from ..extensions import db
from ..models import ImportStatus, LeadImport, Role, User
from ..storage import BLOCK_SIZE, get_storage
from ..storage.base import Readable
from . import job_rules
from .reader import NotCsv, detect_encoding

log = logging.getLogger(__name__)

#: How much of the file decides whether it is CSV text at all (its encoding is detected on it).
SAMPLE_BYTES = 64 * 1024

#: LeadImport.filename's column size.
MAX_FILENAME_LENGTH = 255


class ImportRejected(Exception):
    """The upload cannot become an import; `message` says why, in words the admin may read."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidTelecallers(ImportRejected):
    """Some chosen telecallers are not active telecallers of the branch (`telecaller_ids` names them)."""

    def __init__(self, message: str, telecaller_ids: Sequence[int]):
        super().__init__(message)
        self.telecaller_ids = list(telecaller_ids)


class NoTelecallers(ImportRejected):
    """No telecaller was chosen to share the leads."""


class EmptyFile(ImportRejected):
    """The file has no bytes at all."""


class FileTooLarge(ImportRejected):
    """The file is larger than `limit` bytes."""

    def __init__(self, limit: int):
        super().__init__(f"The file is larger than the limit of {describe_size(limit)}.")
        self.limit = limit


class NotCsvFile(ImportRejected):
    """The file is not CSV text (binary, or in no encoding that the reader knows)."""


class QueueUnavailable(jobs.BrokerUnavailable, ImportRejected):
    """The import could not be handed to the workers (the broker is down): nothing was kept.

    A BrokerUnavailable first, so that it is answered as the job queue being down wherever it rises,
    and an ImportRejected, so that whoever reports refused uploads (the form, the CLI) reports it too.
    """


def describe_size(size: int) -> str:
    """1048576 -> '1 MiB'; sizes that are not whole MiB or KiB are shown in bytes."""
    for unit, factor in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} bytes"


# -- telecallers -------------------------------------------------------------------------------------------


def active_telecallers(branch_id: int) -> list[User]:
    """The branch's active telecallers, by email (the form's checkboxes)."""
    stmt = (
        sa.select(User)
        .where(User.branch_id == branch_id, User.role == Role.TELECALLER, User.active.is_(True))
        .order_by(User.email)
    )
    return list(db.session.execute(stmt).scalars())


def check_telecallers(branch_id: int, telecaller_ids: Iterable[int]) -> list[int]:
    """The ids, without repeats, if each is an active telecaller of the branch; else InvalidTelecallers
    naming every offending id. (An id of another branch is reported like an unknown one: an admin
    learns nothing about other branches.)"""
    ids = list(dict.fromkeys(telecaller_ids))
    if not ids:
        raise NoTelecallers("Choose at least one telecaller to assign the leads to.")
    found = {
        user.id: user
        for user in db.session.execute(sa.select(User).where(User.id.in_(ids))).scalars()
        if user.branch_id == branch_id and user.role == Role.TELECALLER
    }
    unknown = [i for i in ids if i not in found]
    inactive = [i for i in ids if i in found and not found[i].active]
    if unknown or inactive:
        problems = [f"{i} (not a telecaller of this branch)" for i in unknown]
        # Deactivated ones are of this branch: the admin may see who they are.
        problems += [f"{i} ({found[i].email}, deactivated)" for i in inactive]
        message = f"These telecallers cannot take leads: {', '.join(problems)}."
        raise InvalidTelecallers(message, unknown + inactive)
    return ids


# -- the file ----------------------------------------------------------------------------------------------


class _LimitedReader:
    """Reads `head` then `rest`, counting bytes; FileTooLarge as soon as more than `limit` went through."""

    def __init__(self, head: bytes, rest: Readable, limit: int):
        self._head, self._rest, self._limit = memoryview(head), rest, limit
        self.count = 0

    def read(self, size: int = -1, /) -> bytes:
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(BLOCK_SIZE), b""))
        if self._head:
            data, self._head = bytes(self._head[:size]), self._head[size:]
        else:
            data = self._rest.read(size)
        self.count += len(data)
        if self.count > self._limit:
            raise FileTooLarge(self._limit)
        return data


def _read_sample(fileobj: Readable, size: int) -> bytes:
    """The first size bytes (fewer only at the end of the file): a stream may return short reads."""
    pieces, wanted = [], size
    while wanted > 0 and (piece := fileobj.read(wanted)):
        pieces.append(piece)
        wanted -= len(piece)
    return b"".join(pieces)


def _check_is_csv(sample: bytes) -> None:
    if not sample:
        raise EmptyFile("The file is empty.")
    try:
        detect_encoding(sample)
    except NotCsv as error:
        raise NotCsvFile(f"The file is not CSV text: {error}") from None


def storage_key_for(filename: str) -> str:
    """A fresh key for an upload, keeping a safe form of its name (for whoever browses the storage)."""
    safe = secure_filename(filename)[:100] or "upload.csv"
    return f"imports/{uuid.uuid4().hex}/{safe}"


def display_filename(filename: str | None) -> str:
    """The name shown in the history: the client's, stripped of any folder, at most 255 characters."""
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    name = "".join(char for char in name if char.isprintable())
    return name[:MAX_FILENAME_LENGTH] or "upload.csv"


# -- starting an import ------------------------------------------------------------------------------------


def start_import(admin: User, fileobj: Readable, filename: str | None, telecaller_ids: Iterable[int]):
    """An admin's upload, as an import of their branch (see start_branch_import)."""
    return start_branch_import(admin.branch_id, fileobj, filename, telecaller_ids, created_by_id=admin.id)


def start_branch_import(
    branch_id: int,
    fileobj: Readable,
    filename: str | None,
    telecaller_ids: Iterable[int],
    *,
    created_by_id: int | None = None,
    max_bytes: int | None = None,
) -> LeadImport:
    """Store the CSV and queue its import; the LeadImport, committed `queued` with its job id.

    Raises an ImportRejected (nothing stored, no row) for bad telecallers, an empty, too large
    (over max_bytes, default MAX_CSV_BYTES) or non-CSV file, or a broker that cannot take the job.
    """
    ids = check_telecallers(branch_id, telecaller_ids)
    limit = max_bytes if max_bytes is not None else current_app.config["MAX_CSV_BYTES"]

    sample = _read_sample(fileobj, min(SAMPLE_BYTES, limit + 1))
    if len(sample) > limit:
        raise FileTooLarge(limit)
    _check_is_csv(sample)

    storage = get_storage()
    key = storage_key_for(filename or "")
    reader = _LimitedReader(sample, fileobj, limit)
    try:
        storage.save(key, reader)
    except BaseException:
        # A backend removes a failed save's partial file itself; this covers one that does not.
        _forget(storage, key)
        raise
    metrics.count_upload("csv", reader.count)

    try:
        lead_import = LeadImport(
            branch_id=branch_id,
            created_by_id=created_by_id,
            filename=display_filename(filename),
            storage_key=key,
            telecaller_ids=ids,
            status=ImportStatus.QUEUED,
            job_id=jobs.new_job_id(),
        )
        db.session.add(lead_import)
        db.session.flush()
        # Committed before the job is sent, so a worker always finds the import. The branch rides
        # along, so the ledger files the job under it. Refused: no import, no job (and no file, below).
        jobs.send(
            job_rules.IMPORT_LEADS,
            lead_import.id,
            branch_id=branch_id,
            job_id=lead_import.job_id,
            undo=lambda: db.session.delete(lead_import),
        )
    except jobs.BrokerUnavailable as error:
        # The request changes nothing; the admin uploads the file again later.
        _forget(storage, key)
        raise QueueUnavailable(
            "The job queue could not be reached; nothing was kept. Upload the file again."
        ) from error
    except BaseException:
        db.session.rollback()
        _forget(storage, key)
        raise
    return lead_import


def _forget(storage, key: str) -> None:
    try:
        storage.delete(key)
    except Exception:  # the original error matters more; an orphan file is only wasted space
        log.exception("could not delete %s after a failed upload", key)
