"""Leads: prospective students, assigned to a telecaller of their branch."""

from __future__ import annotations

import enum
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import Model
from .types import UTCDateTime, str_enum, utcnow


class LeadStatus(enum.StrEnum):
    NEW = "new"
    CONTACTED = "contacted"
    INTERESTED = "interested"
    NOT_INTERESTED = "not_interested"
    ENROLLED = "enrolled"
    LOST = "lost"


class Lead(Model):
    __tablename__ = "leads"
    __table_args__ = (
        # A phone is one lead per branch: the import pipeline counts a second one as a duplicate.
        sa.UniqueConstraint("branch_id", "phone_number"),
        # Exactly once: a retried or redelivered import cannot insert the same source row twice.
        sa.UniqueConstraint("import_id", "source_row"),
        # The API pages leads by id within a telecaller's or a branch's leads.
        sa.Index("ix_leads_telecaller_id_id", "telecaller_id", "id"),
        sa.Index("ix_leads_branch_id_id", "branch_id", "id"),
        # The API's status filter, within a telecaller's or a branch's leads, in page order.
        sa.Index("ix_leads_telecaller_id_status_id", "telecaller_id", "status", "id"),
        sa.Index("ix_leads_branch_id_status_id", "branch_id", "status", "id"),
        # Search (edcrm.routes.api.lead_search) on PostgreSQL: a phone prefix is a LIKE 'prefix%' that a
        # varchar_pattern_ops B-tree answers whatever the database's collation; a name's words are a
        # full-text prefix query ('anj:*') that a GIN index over the 'simple' configuration answers
        # (no stemming, no stop words: names are not prose). On SQLite the first is a plain index (what the
        # migrations compare must exist everywhere) and the second is not made: it scans the leads in scope.
        sa.Index(
            "ix_leads_branch_id_phone_prefix",
            "branch_id",
            "phone_number",
            postgresql_ops={"phone_number": "varchar_pattern_ops"},
        ),
        sa.Index(
            "ix_leads_name_words",
            sa.text("to_tsvector('simple', student_name)"),
            postgresql_using="gin",
        ).ddl_if(dialect="postgresql"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    branch_id: Mapped[int] = mapped_column(sa.ForeignKey("branches.id"))
    telecaller_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    import_id: Mapped[int | None] = mapped_column(sa.ForeignKey("lead_imports.id", ondelete="SET NULL"))
    source_row: Mapped[int | None]
    student_name: Mapped[str] = mapped_column(sa.String(200))
    phone_number: Mapped[str] = mapped_column(sa.String(20))  # E.164
    email: Mapped[str | None] = mapped_column(sa.String(254))
    alternate_phone: Mapped[str | None] = mapped_column(sa.String(20))
    course: Mapped[str | None] = mapped_column(sa.String(200))
    university: Mapped[str | None] = mapped_column(sa.String(200))
    city: Mapped[str | None] = mapped_column(sa.String(120))
    source: Mapped[str | None] = mapped_column(sa.String(120))
    status: Mapped[LeadStatus] = mapped_column(
        str_enum(LeadStatus, "lead_status"), default=LeadStatus.NEW, server_default=LeadStatus.NEW.value
    )
    assigned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
