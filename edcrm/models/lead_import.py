"""A CSV of leads uploaded by a branch admin, what its import did, and the rows it rejected."""

from __future__ import annotations

import enum
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import Model
from .types import JSONType, UTCDateTime, str_enum, utcnow


class ImportStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: The statuses an import never leaves.
FINAL_STATUSES = frozenset({ImportStatus.COMPLETED, ImportStatus.FAILED, ImportStatus.CANCELLED})


class LeadImport(Model):
    __tablename__ = "lead_imports"
    __table_args__ = (sa.Index("ix_lead_imports_branch_id_id", "branch_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    branch_id: Mapped[int] = mapped_column(sa.ForeignKey("branches.id"))
    created_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    filename: Mapped[str] = mapped_column(sa.String(255))
    # The uploaded file; emptied once the import is over and the file deleted.
    storage_key: Mapped[str | None] = mapped_column(sa.String(512))
    telecaller_ids: Mapped[list[int]] = mapped_column(JSONType, default=list)
    status: Mapped[ImportStatus] = mapped_column(
        str_enum(ImportStatus, "import_status"), default=ImportStatus.QUEUED
    )
    total_rows: Mapped[int] = mapped_column(default=0)
    processed_rows: Mapped[int] = mapped_column(default=0)
    successful_rows: Mapped[int] = mapped_column(default=0)
    failed_rows: Mapped[int] = mapped_column(default=0)
    duplicate_rows: Mapped[int] = mapped_column(default=0)
    distribution: Mapped[dict[str, int]] = mapped_column(JSONType, default=dict)
    # The header cells of the file as it has them (the error report repeats them).
    source_columns: Mapped[list[str] | None] = mapped_column(JSONType)
    # The spreadsheet row number of the last row whose outcome is committed: a retried or redelivered
    # job resumes after it (see edcrm.imports.lifecycle).
    checkpoint_row: Mapped[int] = mapped_column(default=0, server_default="0")
    # The branch's round-robin cursor when this import assigned its first lead.
    cursor_start: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(sa.Text)
    job_id: Mapped[str | None] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    def __repr__(self) -> str:
        return f"<LeadImport {self.id} {self.status.value}>"


class ImportRejection(Model):
    """A row of an import's file that did not become a lead (invalid, or a duplicate), with its reasons.

    Written in the same transaction as the leads of its batch, so a redelivered job never lists a row
    twice; the error report streams them back in row order.
    """

    __tablename__ = "import_rejections"

    import_id: Mapped[int] = mapped_column(
        sa.ForeignKey("lead_imports.id", ondelete="CASCADE"), primary_key=True
    )
    row_number: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    duplicate: Mapped[bool] = mapped_column(default=False)
    reasons: Mapped[str] = mapped_column(sa.Text)
    # The row's cells exactly as the file has them.
    cells: Mapped[list[str]] = mapped_column(JSONType)
