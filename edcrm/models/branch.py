"""A branch of the institute: the unit an admin runs and leads belong to."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import Model, db
from .types import UTCDateTime, utcnow


class Branch(Model):
    __tablename__ = "branches"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(120), unique=True)
    # Where round-robin assignment of imported leads resumes (edcrm.imports.distribution).
    lead_cursor: Mapped[int] = mapped_column(default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    @classmethod
    def get_or_create(cls, name: str) -> Branch:
        branch = db.session.execute(sa.select(cls).filter_by(name=name)).scalar_one_or_none()
        if branch is None:
            branch = cls(name=name)
            db.session.add(branch)
            db.session.flush()
        return branch

    def __repr__(self) -> str:
        return f"<Branch {self.id} {self.name!r}>"
