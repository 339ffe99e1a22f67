"""Leads to call, each with a phone number of its own."""

from __future__ import annotations

import itertools

from edcrm.extensions import db
from edcrm.models import Branch, Lead

_phones = itertools.count(8_000_000_000)


def make_lead(branch: Branch, telecaller=None, name: str = "Student") -> Lead:
    """A committed lead of branch, assigned to telecaller (None: unassigned)."""
    lead = Lead(
        branch_id=branch.id,
        telecaller_id=telecaller.id if telecaller else None,
        student_name=name,
        phone_number=f"+91{next(_phones)}",
    )
    db.session.add(lead)
    db.session.commit()
    return lead
