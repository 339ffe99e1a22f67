"""Why an upload is refused: one family, `UploadRejected`, each subclass saying what happened, with its
data (edcrm.routes.errors answers each with its status)."""

from __future__ import annotations

from .. import jobs


class UploadRejected(Exception):
    """What the client sent cannot be taken; `message` says why, in words the client may read."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidUpload(UploadRejected):
    """What was sent cannot be stored: a malformed checksum, a chunk out of range or empty, an empty
    file, chunks that do not add up to the announced size."""


class TooLarge(UploadRejected):
    """The recording or chunk is larger than `limit` bytes."""

    def __init__(self, message: str, limit: int):
        super().__init__(message)
        self.limit = limit


class ChecksumMismatch(UploadRejected):
    """Chunk `index` is not the bytes its checksum names: it is not kept."""

    def __init__(self, message: str, index: int):
        super().__init__(message)
        self.index = index


class WrongState(UploadRejected):
    """The upload's state does not allow this (a chunk after `complete`, a delete while processing)."""


class ChunksMissing(UploadRejected):
    """The upload cannot be completed: the chunks `missing` have not arrived."""

    def __init__(self, message: str, missing: list[int]):
        super().__init__(message)
        self.missing = missing


class QueueUnavailable(jobs.BrokerUnavailable, UploadRejected):
    """The broker refused the job: nothing changed, the client may try again.

    A BrokerUnavailable first, so that it is answered as the job queue being down wherever it rises.
    """


# -- tus (edcrm.recordings.tus) ---------------------------------------------------------------------------


class OffsetMismatch(UploadRejected):
    """A PATCH that does not start where the upload is: `offset` is the upload's committed offset, from
    which the client resumes."""

    def __init__(self, message: str, offset: int):
        super().__init__(message)
        self.offset = offset


class UploadLocked(UploadRejected):
    """Another request is writing this upload right now (one writer per upload, on any host)."""


class TusChecksumMismatch(UploadRejected):
    """The PATCH's body is not the bytes its Upload-Checksum names: nothing of it is kept."""


class ChecksumUnsupported(UploadRejected):
    """An Upload-Checksum algorithm other than those of edcrm.recordings.tus.CHECKSUM_ALGORITHMS."""


class UploadExpired(UploadRejected):
    """The upload expired (TUS_UPLOAD_TTL_HOURS without a byte) or was terminated: it takes nothing
    more and its bytes are, or are about to be, gone."""


class LengthConflict(UploadRejected):
    """An Upload-Length that cannot be: different from the one already set (`changed`) or below the
    bytes already received (not `changed`)."""

    def __init__(self, message: str, *, changed: bool):
        super().__init__(message)
        self.changed = changed


class BodyEndedEarly(UploadRejected):
    """The body ended before its Content-Length without its stream saying why; what arrived is kept
    when the PATCH had no checksum."""


class ConcatInvalid(UploadRejected):
    """A final upload names partial uploads that cannot be concatenated: not partial, not finished,
    not the telecaller's, or gone."""


class NotARecording(UploadRejected):
    """The upload's first bytes are not audio of a kind the app takes: it failed, with `reason`."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason
