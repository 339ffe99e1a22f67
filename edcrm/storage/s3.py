"""S3, or an S3-compatible server such as MinIO (`S3_ENDPOINT_URL`), through boto3: `s3://bucket/prefix`.

Credentials come from the standard AWS variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ...) or any
other source of boto3's chain. The client is built on first use, not when the backend is made, so
nothing connects at import or app creation.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import IO, Any, BinaryIO, cast
from urllib.parse import quote

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotocoreConnectionError

from .. import spool
from . import botocore_data
from .base import (
    InvalidPart,
    NoSuchMultipart,
    ObjectNotFound,
    Readable,
    Storage,
    StorageError,
    StorageUnavailable,
    copy_stream,
    validate_key,
    validate_part,
    validate_parts,
    validate_range,
)

MIB = 1024 * 1024

#: Objects of 8 MiB and more go up as multipart uploads of 8 MiB parts, 4 in flight, each read from disk.
DEFAULT_TRANSFER_CONFIG = TransferConfig(
    multipart_threshold=8 * MIB, multipart_chunksize=8 * MIB, max_concurrency=4
)

#: Storage.assemble: parts of 8 MiB (S3's minimum is 5 MiB), 4 going up at once, each read from disk.
ASSEMBLE_PART_SIZE = 8 * MIB
ASSEMBLE_CONCURRENCY = 4

#: SigV4 presigned URLs live at most a week.
MAX_URL_EXPIRY = 7 * 24 * 3600
#: DeleteObjects takes at most 1,000 keys a request.
DELETE_BATCH = 1000

_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
#: What CompleteMultipartUpload answers for parts it cannot join (the upload stays in progress).
_INVALID_PART_CODES = frozenset({"InvalidPart", "InvalidPartOrder", "EntityTooSmall", "MalformedXML"})
#: Error codes of requests S3 may take later: throttling, its own failures, a body that came too slowly.
_TRANSIENT_CODES = frozenset(
    {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling"}
)


def client_config() -> Config:
    return Config(
        signature_version="s3v4",
        # Path-style (endpoint/bucket/key): MinIO and most S3-compatible servers have no bucket DNS.
        s3={"addressing_style": "path"},
        # botocore >= 1.36 adds CRC checksums to every request and checks them on every response by
        # default; MinIO and other S3 servers refuse or lack them. Only where the API demands them.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"mode": "standard", "max_attempts": 3},
        connect_timeout=5,
        read_timeout=60,
        # Web threads and transfer threads share one client: enough connections for all of them.
        max_pool_connections=32,
    )


def is_not_found(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") in _NOT_FOUND_CODES


def error_code(error: ClientError) -> str | None:
    return error.response.get("Error", {}).get("Code")


def _status(error: ClientError) -> int:
    return error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0


def _causes(error: BaseException | None):
    """error, then what it was raised from or while handling (boto3 wraps a ClientError)."""
    for _ in range(8):
        if error is None:
            return
        yield error
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)


def is_unavailable(error: BaseException) -> bool:
    """Is error S3 (or the way to it) failing now, rather than S3 refusing a request for good? No
    connection, a timeout, a 5xx or throttling answer (after botocore's own retries) are."""
    for cause in _causes(error):
        if isinstance(cause, (BotocoreConnectionError, HTTPClientError)):
            return True
        if isinstance(cause, ClientError):
            status = cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            return status >= 500 or cause.response.get("Error", {}).get("Code") in _TRANSIENT_CODES
        if not isinstance(cause, S3UploadFailedError):
            return False
    return False


def _reports_outages(method):
    """Raise StorageUnavailable (from the original error) where S3 cannot be used now."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except StorageError:
            raise
        except Exception as error:
            if is_unavailable(error):
                raise StorageUnavailable(f"S3 ({self!r}) is unavailable: {error}") from error
            raise

    return wrapper


def content_disposition(filename: str) -> str:
    """`attachment` with an ASCII fallback name and the real one (RFC 6266 / RFC 5987)."""
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


class FileRegion:
    """length bytes of a local file from offset, as a seekable stream (a part of a multipart upload:
    botocore hashes it for the signature, seeks back, then sends it block by block)."""

    def __init__(self, path: str, offset: int, length: int):
        self._file = open(path, "rb")  # noqa: SIM115  (closed by __exit__)
        self._offset, self._length, self._position = offset, length, 0

    def __len__(self) -> int:
        return self._length

    def read(self, size: int = -1) -> bytes:
        left = self._length - self._position
        size = left if size is None or size < 0 else min(size, left)
        self._file.seek(self._offset + self._position)
        data = self._file.read(size)
        self._position += len(data)
        return data

    def seek(self, position: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._position, os.SEEK_END: self._length}[whence]
        self._position = max(0, min(self._length, base + position))
        return self._position

    def tell(self) -> int:
        return self._position

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> FileRegion:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class _Body:
    """An object's bytes as botocore streams them (its StreamingBody), whose reads raise
    StorageUnavailable when the connection fails midway, as the storage's other operations do."""

    def __init__(self, body, storage: S3Storage):
        self._body, self._storage = body, storage

    def read(self, size: int = -1) -> bytes:
        try:
            return self._body.read(None if size is None or size < 0 else size)
        except Exception as error:
            if is_unavailable(error):
                raise StorageUnavailable(f"S3 ({self._storage!r}) failed mid-read: {error}") from error
            raise

    def close(self) -> None:
        self._body.close()

    def __getattr__(self, name: str):
        return getattr(self._body, name)

    def __enter__(self) -> _Body:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _wait_for_room(parts: list[Future], concurrency: int) -> None:
    """Block until fewer than concurrency parts are in flight; raise the error of a part that failed."""
    pending = [part for part in parts if not part.done()]
    if len(pending) >= concurrency:
        wait(pending, return_when=FIRST_COMPLETED)
    for part in parts:
        error = part.exception() if part.done() else None
        if error is not None:
            raise error


class S3Storage(Storage):
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        transfer_config: TransferConfig | None = None,
    ):
        if not bucket:
            raise ValueError("an S3 storage needs a bucket")
        self.bucket = bucket
        self.prefix = validate_key(prefix.strip("/")) if prefix.strip("/") else ""
        self.endpoint_url = endpoint_url
        self.region = region
        self.transfer_config = transfer_config or DEFAULT_TRANSFER_CONFIG
        self._client = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"<S3Storage s3://{self.bucket}/{self.prefix}{where}>"

    @property
    def client(self):
        """The boto3 S3 client, built on first use (clients are thread-safe; sessions are not)."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    # Slimmed endpoint and model data: about 10 MB less per process (botocore_data).
                    session = boto3.session.Session(botocore_session=botocore_data.session())
                    self._client = session.client(
                        "s3", endpoint_url=self.endpoint_url, region_name=self.region, config=client_config()
                    )
        return self._client

    def object_key(self, key: str) -> str:
        """The S3 object key of a storage key (under the prefix)."""
        key = validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    @_reports_outages
    def save(self, key: str, fileobj: Readable) -> int:
        # Spooled to local disk, then sent from there: s3transfer would hold a stream's parts in memory
        # (up to 4 x 8 MiB a request), where it reads a file's from disk as it sends them. A stream that
        # fails fails before anything is sent; a multipart upload that fails is aborted by s3transfer.
        self.object_key(key)  # an invalid key is refused before the stream is read
        with spool.named_file("edcrm-s3-") as spooled:
            copy_stream(fileobj, spooled)
            spooled.flush()
            return self.save_file(key, spooled.name)

    @_reports_outages
    def save_file(self, key: str, path: str | os.PathLike) -> int:
        object_key = self.object_key(key)
        size = os.path.getsize(path)
        if size < self.transfer_config.multipart_threshold:
            # One PUT, which botocore streams from the file (a chunk, a small recording): no transfer
            # manager and its threads to start for each of a recording's hundreds of chunks.
            with open(path, "rb") as body:
                self.client.put_object(Bucket=self.bucket, Key=object_key, Body=body)
        else:
            # From a file name, s3transfer reads each part from disk as it sends it (a stream, however
            # large the part), where from a file object it would hold every part in flight in memory.
            self.client.upload_file(os.fspath(path), self.bucket, object_key, Config=self.transfer_config)
        return size

    @_reports_outages
    def assemble(
        self, key: str, blocks: Iterable[bytes], spool: IO[bytes], verify: Callable[[], None] = lambda: None
    ) -> int:
        """A multipart upload whose parts go up from the spool, each as soon as it is complete on disk,
        while the next ones are still being written: the upload overlaps the reading of the blocks, and
        no part is ever held in memory (botocore streams it from its file region). Blocks of any size
        are gathered into parts of ASSEMBLE_PART_SIZE (S3 wants 5 MiB at least but for the last). On any
        failure, or when verify refuses the bytes, the upload is aborted: no object, no stray parts."""
        object_key = self.object_key(key)
        part_size, size = ASSEMBLE_PART_SIZE, 0
        parts: list[Future[str]] = []
        upload_id = None
        pool = ThreadPoolExecutor(ASSEMBLE_CONCURRENCY, thread_name_prefix="edcrm-s3-part")
        try:
            for block in blocks:
                spool.write(block)
                size += len(block)
                while size >= (len(parts) + 1) * part_size:  # the next part is complete on disk
                    if upload_id is None:
                        created = self.client.create_multipart_upload(Bucket=self.bucket, Key=object_key)
                        upload_id = created["UploadId"]
                    spool.flush()
                    part = self._send_part(pool, object_key, upload_id, spool.name, len(parts), part_size)
                    parts.append(part)
                    _wait_for_room(parts, ASSEMBLE_CONCURRENCY)
            spool.flush()
            verify()
            if upload_id is None:  # small: one ordinary PUT
                pool.shutdown()
                return self.save_file(key, spool.name)
            last = size - len(parts) * part_size
            if last:
                parts.append(self._send_part(pool, object_key, upload_id, spool.name, len(parts), last))
            done = [{"PartNumber": number + 1, "ETag": part.result()} for number, part in enumerate(parts)]
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=object_key, UploadId=upload_id, MultipartUpload={"Parts": done}
            )
            return size
        except BaseException:
            for part in parts:
                part.cancel()
            pool.shutdown(wait=True)
            if upload_id is not None:
                with contextlib.suppress(Exception):  # the original error matters more
                    self.client.abort_multipart_upload(Bucket=self.bucket, Key=object_key, UploadId=upload_id)
            raise
        finally:
            pool.shutdown(wait=True)

    def _send_part(self, pool, object_key: str, upload_id: str, path: str, index: int, length: int) -> Future:
        def send() -> str:
            with FileRegion(path, index * ASSEMBLE_PART_SIZE, length) as body:
                answer = self.client.upload_part(
                    Bucket=self.bucket, Key=object_key, UploadId=upload_id, PartNumber=index + 1, Body=body
                )
            return answer["ETag"]

        return pool.submit(send)

    @_reports_outages
    def open(self, key: str) -> BinaryIO:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.object_key(key))
        except ClientError as error:
            if is_not_found(error):
                raise ObjectNotFound(key) from None
            raise
        # _Body reads like the BinaryIO its callers expect (and hands anything else to botocore's body).
        return cast(BinaryIO, _Body(response["Body"], self))

    @_reports_outages
    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.object_key(key))

    @_reports_outages
    def delete_many(self, keys: Iterable[str]) -> None:
        """DeleteObjects, DELETE_BATCH keys a request (S3's limit); a key it could not delete raises."""
        object_keys = [self.object_key(key) for key in keys]
        for start in range(0, len(object_keys), DELETE_BATCH):
            batch = [{"Key": key} for key in object_keys[start : start + DELETE_BATCH]]
            answer = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            if errors := answer.get("Errors"):
                first = errors[0]
                raise OSError(
                    f"S3 did not delete {len(errors)} object(s), e.g. {first.get('Key')}: "
                    f"{first.get('Code')} {first.get('Message')}"
                )

    @_reports_outages
    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=self.object_key(key))
        except ClientError as error:
            if is_not_found(error):
                return None
            raise

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def size(self, key: str) -> int:
        head = self._head(key)
        if head is None:
            raise ObjectNotFound(key)
        return head["ContentLength"]

    @_reports_outages
    def check(self) -> None:
        """The bucket exists and these credentials may use it."""
        self.client.head_bucket(Bucket=self.bucket)

    # -- multipart uploads ------------------------------------------------------------------------------

    @_reports_outages
    def start_multipart(self, key: str, *, part_size: int, content_type: str | None = None) -> str:
        object_key = self.object_key(key)
        validate_part(1, 0, part_size)
        extra = {"ContentType": content_type} if content_type else {}
        created = self.client.create_multipart_upload(Bucket=self.bucket, Key=object_key, **extra)
        return created["UploadId"]

    @contextlib.contextmanager
    def _in_progress(self, key: str, multipart_id: str):
        """NoSuchMultipart inside the block where S3 says the upload is not in progress: NoSuchUpload,
        or a 5xx when ListParts says there is no such upload (for one it no longer has, moto answers 500
        to UploadPart and CompleteMultipartUpload, and Ceph RGW 500 to CompleteMultipartUpload)."""
        try:
            yield
        except ClientError as error:
            if error_code(error) == "NoSuchUpload" or (
                _status(error) >= 500 and self._gone(key, multipart_id)
            ):
                raise NoSuchMultipart(key, multipart_id) from None
            raise

    def _gone(self, key: str, multipart_id: str) -> bool:
        """Does S3 know no upload multipart_id of key? False when it cannot say (it is down)."""
        try:
            self.client.list_parts(
                Bucket=self.bucket, Key=self.object_key(key), UploadId=multipart_id, MaxParts=1
            )
        except ClientError as error:
            # Ceph RGW answers NoSuchKey for an upload it no longer has (its meta object is gone).
            return error_code(error) in ("NoSuchUpload", "NoSuchKey")
        except Exception:  # the error the caller had matters, not this one
            return False
        return False

    @_reports_outages
    def put_part(
        self,
        key: str,
        multipart_id: str,
        number: int,
        path: str | os.PathLike,
        offset: int,
        length: int,
        *,
        part_size: int,
    ) -> str:
        object_key = self.object_key(key)
        validate_part(number, length, part_size)
        validate_range(offset, offset + length)
        if os.path.getsize(path) < offset + length:
            raise ValueError(f"{os.fspath(path)!r} holds no {length} bytes from {offset}")
        # botocore reads the region from disk (to sign it, then to send it): no part in memory.
        with FileRegion(os.fspath(path), offset, length) as body, self._in_progress(key, multipart_id):
            answer = self.client.upload_part(
                Bucket=self.bucket,
                Key=object_key,
                UploadId=multipart_id,
                PartNumber=number,
                Body=body,
                ContentLength=length,
            )
        return answer["ETag"]

    @_reports_outages
    def copy_part(
        self,
        key: str,
        multipart_id: str,
        number: int,
        source_key: str,
        *,
        part_size: int,
        start: int = 0,
        stop: int | None = None,
    ) -> str:
        object_key, source = self.object_key(key), self.object_key(source_key)
        validate_range(start, stop)
        validate_part(number, 0, part_size)  # before any request; the length once the size is known
        size = self.size(source_key)  # ObjectNotFound, and the range checked here as on every backend
        stop = size if stop is None else stop
        if stop > size or start >= stop:
            raise ValueError(f"no bytes [{start}, {stop}) in {source_key!r} of {size} bytes")
        validate_part(number, stop - start, part_size)
        # The whole object is copied without a range: S3 takes a range only of a source above 5 MiB.
        extra = {} if (start, stop) == (0, size) else {"CopySourceRange": f"bytes={start}-{stop - 1}"}
        with self._in_progress(key, multipart_id):
            try:
                answer = self.client.upload_part_copy(
                    Bucket=self.bucket,
                    Key=object_key,
                    UploadId=multipart_id,
                    PartNumber=number,
                    CopySource={"Bucket": self.bucket, "Key": source},
                    **extra,
                )
            except ClientError as error:
                if is_not_found(error):  # removed since we looked
                    raise ObjectNotFound(source_key) from None
                raise
        return answer["CopyPartResult"]["ETag"]

    @_reports_outages
    def complete_multipart(self, key: str, multipart_id: str, parts: list[tuple[int, str]]) -> int:
        object_key = self.object_key(key)
        validate_parts(parts)
        joined = [{"PartNumber": number, "ETag": etag} for number, etag in parts]
        try:
            with self._in_progress(key, multipart_id):
                self.client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=object_key,
                    UploadId=multipart_id,
                    MultipartUpload={"Parts": joined},
                )
        except ClientError as error:
            code = error_code(error)
            if code in _INVALID_PART_CODES:
                raise InvalidPart(
                    f"S3 cannot join these parts ({code}){self._left_out(key, multipart_id, parts)}"
                ) from error
            raise
        except NoSuchMultipart:
            # Completed before (this call, retried, or another process): its object answers for it.
            head = self._head(key)
            if head is None:
                raise
            return head["ContentLength"]
        head = self._head(key)
        if head is None:  # removed in the instant since: as if completed and deleted
            raise ObjectNotFound(key)
        return head["ContentLength"]

    def _left_out(self, key: str, multipart_id: str, parts: list[tuple[int, str]]) -> str:
        """Why S3 may have refused parts, for the error's message: parts sent but not joined, which Ceph
        RGW refuses to leave out (AWS and moto would)."""
        given = {number for number, _ in parts}
        try:
            pages = self.client.get_paginator("list_parts").paginate(
                Bucket=self.bucket, Key=self.object_key(key), UploadId=multipart_id
            )
            left_out = [
                part["PartNumber"]
                for page in pages
                for part in page.get("Parts", [])
                if part["PartNumber"] not in given
            ]
        except Exception:  # only a message: the refusal matters, not this
            return ""
        return f": parts {left_out} were sent but are not joined" if left_out else ""

    @_reports_outages
    def abort_multipart(self, key: str, multipart_id: str) -> None:
        try:
            self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=self.object_key(key), UploadId=multipart_id
            )
        except ClientError as error:
            # Ceph RGW may answer NoSuchKey where the upload's meta object is gone.
            if error_code(error) not in ("NoSuchUpload", "NoSuchKey"):
                raise

    # -- ranges and copies -------------------------------------------------------------------------

    @_reports_outages
    def open_range(self, key: str, start: int, stop: int | None = None) -> BinaryIO:
        object_key = self.object_key(key)
        validate_range(start, stop)
        if stop == start:  # no HTTP range is empty: only whether the object is there
            if self._head(key) is None:
                raise ObjectNotFound(key)
            return cast(BinaryIO, io.BytesIO())
        last = "" if stop is None else str(stop - 1)
        try:
            response = self.client.get_object(
                Bucket=self.bucket, Key=object_key, Range=f"bytes={start}-{last}"
            )
        except ClientError as error:
            if is_not_found(error):
                raise ObjectNotFound(key) from None
            if error_code(error) == "InvalidRange":  # start at or past the end
                return cast(BinaryIO, io.BytesIO())
            raise
        return cast(BinaryIO, _Body(response["Body"], self))

    @_reports_outages
    def copy(self, source_key: str, key: str) -> None:
        """CopyObject (S3 copies objects up to 5 GiB so; recordings are far smaller)."""
        try:
            self.client.copy_object(
                Bucket=self.bucket,
                Key=self.object_key(key),
                CopySource={"Bucket": self.bucket, "Key": self.object_key(source_key)},
            )
        except ClientError as error:
            if is_not_found(error):
                raise ObjectNotFound(source_key) from None
            raise

    def url_for_download(
        self, key: str, expires: int, *, filename: str | None = None, content_type: str | None = None
    ) -> str:
        if not 1 <= expires <= MAX_URL_EXPIRY:
            raise ValueError(f"a signed URL expires after 1 to {MAX_URL_EXPIRY} seconds, not {expires}")
        params = {"Bucket": self.bucket, "Key": self.object_key(key)}
        if filename:
            params["ResponseContentDisposition"] = content_disposition(filename)
        if content_type:
            params["ResponseContentType"] = content_type
        # Signing is local: no request is made here.
        return self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=expires)
