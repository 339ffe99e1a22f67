"""What can go wrong with a job: raised by actors (Unrecoverable) and by operators' actions."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..models.job import Job, JobState


class Unrecoverable(Exception):
    """A job cannot succeed however often it is tried (its import, call log or file is gone).

    Raised by an actor, it ends the job `cancelled` at once, with no retry.
    """


class JobNotFound(LookupError):
    pass


class BrokerUnavailable(Exception):
    """The job could not be sent: the broker is unreachable. What the send was to start is undone."""


class JobStateConflict(Exception):
    """The job is not in a state that allows the operation (e.g. cancelling a running job)."""

    def __init__(self, job: Job, operation: str, allowed: Iterable[JobState]):
        self.job = job
        names = ", ".join(state.value for state in allowed)
        super().__init__(f"cannot {operation} a {job.state.value} job (only {names})")


class RetryRefused(JobStateConflict):
    """The job is failed or cancelled, but a retry could only end cancelled: what it works on is gone
    or can never be worked on again (edcrm.jobs.subjects). `reason` says why, in plain words."""

    def __init__(self, job: Job, reason: str):
        self.job, self.reason = job, reason
        Exception.__init__(self, reason)
