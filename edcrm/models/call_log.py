"""A telecaller's call to a lead."""

from __future__ import annotations

import enum
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import Model, db
from .lead import Lead
from .recording import Recording
from .types import UTCDateTime, str_enum, utcnow


class CallOutcome(enum.StrEnum):
    CONNECTED = "connected"
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    INVALID_NUMBER = "invalid_number"


#: The longest note a call log keeps.
MAX_NOTES = 2000


class CallLog(Model):
    __tablename__ = "call_logs"
    __table_args__ = (sa.CheckConstraint("duration_seconds >= 0", name="duration_not_negative"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    lead_id: Mapped[int] = mapped_column(sa.ForeignKey("leads.id", ondelete="CASCADE"), index=True)
    telecaller_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), index=True)
    outcome: Mapped[CallOutcome] = mapped_column(str_enum(CallOutcome, "call_outcome"))
    duration_seconds: Mapped[int] = mapped_column(default=0)
    #: What the telecaller wrote about the call (at most MAX_NOTES characters, checked by the API).
    notes: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    lead: Mapped[Lead] = relationship()

    @property
    def recording(self) -> Recording | None:
        """The call's recording: the latest one stored, if any."""
        latest = sa.select(Recording).where(Recording.call_log_id == self.id).order_by(Recording.id.desc())
        return db.session.execute(latest.limit(1)).scalar_one_or_none()
