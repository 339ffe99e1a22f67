"""S3, or an S3-compatible server such as MinIO (`S3_ENDPOINT_URL`), through boto3: `s3://bucket/prefix`.

Credentials come from the standard AWS variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ...) or any
other source of boto3's chain. The client is built on first use, not when the backend is made, so
nothing connects at import or app creation.
"""

from __future__ import annotations

import threading
from typing import Any, BinaryIO
from urllib.parse import quote

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

from .base import BLOCK_SIZE, ObjectNotFound, Readable, Storage, validate_key

MIB = 1024 * 1024

#: Objects above 8 MiB go up as multipart uploads of 8 MiB parts, 4 in flight, and at most 4 parts read
#: ahead of them from a stream (s3transfer holds 10 by default): about 64 MiB of buffers at most,
#: whatever the object's size.
DEFAULT_TRANSFER_CONFIG = TransferConfig(
    multipart_threshold=8 * MIB, multipart_chunksize=8 * MIB, max_concurrency=4
)
# An s3transfer setting that boto3's TransferConfig takes only as an attribute.
DEFAULT_TRANSFER_CONFIG.max_in_memory_upload_chunks = 4

#: SigV4 presigned URLs live at most a week.
MAX_URL_EXPIRY = 7 * 24 * 3600

_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})


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


def content_disposition(filename: str) -> str:
    """`attachment` with an ASCII fallback name and the real one (RFC 6266 / RFC 5987)."""
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


class _FullReader:
    """A file object whose read(n) returns n bytes unless at the end, counting what it read.

    No seek or tell on purpose: s3transfer then reads it in order, one part at a time, as it would a
    socket. Filling each read matters: a socket-like stream may return short reads, and a multipart
    part made of one would be under S3's 5 MiB minimum.
    """

    def __init__(self, fileobj: Readable):
        self._fileobj, self.count = fileobj, 0

    def read(self, size: int = -1) -> bytes:
        pieces = []
        if size is None or size < 0:
            # s3transfer asks for "the rest" only after a read came back short of the multipart
            # threshold, which a full read does only at the end: the rest is then empty.
            while piece := self._fileobj.read(BLOCK_SIZE):
                pieces.append(piece)
        else:
            wanted = size
            while wanted > 0 and (piece := self._fileobj.read(wanted)):
                pieces.append(piece)
                wanted -= len(piece)
        data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        self.count += len(data)
        return data


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
                    self._client = boto3.session.Session().client(
                        "s3", endpoint_url=self.endpoint_url, region_name=self.region, config=client_config()
                    )
        return self._client

    def object_key(self, key: str) -> str:
        """The S3 object key of a storage key (under the prefix)."""
        key = validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def save(self, key: str, fileobj: Readable) -> int:
        object_key = self.object_key(key)
        reader = _FullReader(fileobj)
        # A multipart upload that fails is aborted by s3transfer: no partial object ever appears.
        self.client.upload_fileobj(reader, self.bucket, object_key, Config=self.transfer_config)
        return reader.count

    def open(self, key: str) -> BinaryIO:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.object_key(key))
        except ClientError as error:
            if is_not_found(error):
                raise ObjectNotFound(key) from None
            raise
        return response["Body"]  # botocore's StreamingBody: read(n), iter_chunks(), close()

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.object_key(key))

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

    def check(self) -> None:
        """The bucket exists and these credentials may use it."""
        self.client.head_bucket(Bucket=self.bucket)

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
