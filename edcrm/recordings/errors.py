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
