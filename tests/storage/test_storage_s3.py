"""The S3 backend against moto's S3 server over real HTTP (boto3 is not patched)."""

from __future__ import annotations

import hashlib
import io
import os

import pytest
import requests
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError

from edcrm.storage import InvalidKey, ObjectNotFound, S3Storage, get_storage
from edcrm.storage.base import StorageUnavailable

MIB = 1024 * 1024


@pytest.fixture
def bucket(s3_server):
    return s3_server.create_bucket()


@pytest.fixture
def storage(s3_server, bucket):
    return S3Storage(bucket, "edcrm/test", endpoint_url=s3_server.endpoint_url, region="us-east-1")


class Blocks:
    """A non-seekable file object of `count` blocks (like a request body), that may fail midway."""

    def __init__(self, block: bytes, count: int, *, fail_after: int | None = None):
        self.block, self.left, self.fail_after, self.sent = block, count, fail_after, 0

    def read(self, size: int = -1) -> bytes:
        assert size is not None and size >= 0, "the storage must never read the whole stream"
        if self.fail_after is not None and self.sent == self.fail_after:
            raise ConnectionResetError("the client went away")
        if self.left == 0:
            return b""
        self.left -= 1
        self.sent += 1
        return self.block[:size]


class Trickle:
    """A stream that returns at most 1000 bytes per read, as a socket may."""

    def __init__(self, data: bytes):
        self.data = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self.data.read(min(size, 1000))


def test_round_trip(storage, s3_server, bucket):
    data = os.urandom(MIB + 5)
    assert storage.save("recordings/7/call.m4a", io.BytesIO(data)) == len(data)

    assert storage.exists("recordings/7/call.m4a")
    assert storage.size("recordings/7/call.m4a") == len(data)
    body = storage.open("recordings/7/call.m4a")
    assert body.read(10) + body.read() == data
    body.close()
    # Under the STORAGE_URL's prefix, as any S3 tool sees it.
    raw = s3_server.client().get_object(Bucket=bucket, Key="edcrm/test/recordings/7/call.m4a")
    assert raw["Body"].read() == data

    storage.delete("recordings/7/call.m4a")
    assert not storage.exists("recordings/7/call.m4a")
    storage.delete("recordings/7/call.m4a")  # deleting what is gone is fine
    with pytest.raises(ObjectNotFound):
        storage.open("recordings/7/call.m4a")
    with pytest.raises(ObjectNotFound):
        storage.size("recordings/7/call.m4a")


def test_save_replaces(storage):
    storage.save("k", io.BytesIO(b"first"))
    storage.save("k", io.BytesIO(b"second"))
    assert storage.open("k").read() == b"second"


def test_a_large_object_goes_up_in_parts(s3_server, bucket):
    # 5 MiB parts (S3's minimum) for an 11 MiB stream: three parts.
    small_parts = TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB, max_concurrency=2)
    storage = S3Storage(bucket, endpoint_url=s3_server.endpoint_url, transfer_config=small_parts)
    block = os.urandom(MIB)
    expected = hashlib.sha256(block * 11).hexdigest()

    assert storage.save("big", Blocks(block, 11)) == 11 * MIB

    head = s3_server.client().head_object(Bucket=bucket, Key="big", PartNumber=1)
    assert head["PartsCount"] == 3
    digest = hashlib.sha256()
    for chunk in storage.open("big").iter_chunks(MIB):
        digest.update(chunk)
    assert digest.hexdigest() == expected


def test_short_reads_still_make_full_parts(s3_server, bucket):
    small_parts = TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB)
    storage = S3Storage(bucket, endpoint_url=s3_server.endpoint_url, transfer_config=small_parts)
    data = os.urandom(11 * MIB)

    assert storage.save("trickled", Trickle(data)) == len(data)
    assert storage.open("trickled").read() == data
    # Still streamed in 5 MiB parts, not read whole into one PUT.
    head = s3_server.client().head_object(Bucket=bucket, Key="trickled", PartNumber=1)
    assert head["PartsCount"] == 3


def test_a_failed_upload_leaves_no_object(s3_server, bucket):
    small_parts = TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB)
    storage = S3Storage(bucket, endpoint_url=s3_server.endpoint_url, transfer_config=small_parts)

    with pytest.raises(ConnectionResetError):
        storage.save("broken", Blocks(os.urandom(MIB), 20, fail_after=12))

    assert not storage.exists("broken")
    client = s3_server.client()
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []  # aborted


def test_presigned_url_downloads_the_object(storage):
    data = os.urandom(1000)
    storage.save("recordings/1/a.m4a", io.BytesIO(data))

    url = storage.url_for_download("recordings/1/a.m4a", 300, filename="call 1.m4a", content_type="audio/mp4")
    assert "X-Amz-Signature=" in url and "X-Amz-Expires=300" in url

    response = requests.get(url, timeout=10)
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["Content-Type"] == "audio/mp4"
    assert "attachment" in response.headers["Content-Disposition"]
    assert "call%201.m4a" in response.headers["Content-Disposition"]


def test_presigned_url_expiry_is_bounded(storage):
    with pytest.raises(ValueError):
        storage.url_for_download("k", 0)
    with pytest.raises(ValueError):
        storage.url_for_download("k", 8 * 24 * 3600)


def test_bad_keys_are_refused_before_any_request(storage, s3_server):
    with s3_server.stopped():  # nothing may reach the server
        for key in ["../x", "/abs", "a//b", "a\\b", "a\x00b", ""]:
            for attempt in (
                lambda key=key: storage.save(key, io.BytesIO(b"x")),
                lambda key=key: storage.open(key),
                lambda key=key: storage.delete(key),
                lambda key=key: storage.exists(key),
                lambda key=key: storage.size(key),
                lambda key=key: storage.url_for_download(key, 60),
            ):
                with pytest.raises(InvalidKey):
                    attempt()


def test_check(storage, s3_server):
    storage.check()

    with s3_server.stopped(), pytest.raises(StorageUnavailable) as raised:  # connection refused
        storage.check()
    assert isinstance(raised.value.__cause__, BotoCoreError)

    storage.check()  # the endpoint is back


def test_check_fails_for_a_missing_bucket(s3_server):
    storage = S3Storage("no-such-bucket-here", endpoint_url=s3_server.endpoint_url)
    with pytest.raises(ClientError):
        storage.check()


def test_objects_survive_an_outage(storage, s3_server):
    storage.save("kept", io.BytesIO(b"data"))
    with s3_server.stopped(), pytest.raises(StorageUnavailable):
        storage.save("later", io.BytesIO(b"x"))
    assert storage.open("kept").read() == b"data"


def test_get_storage_reads_the_apps_configuration(app, s3_server, bucket):
    app.config.update(STORAGE_URL=f"s3://{bucket}/files", S3_ENDPOINT_URL=s3_server.endpoint_url)
    with app.app_context():
        storage = get_storage()
        assert isinstance(storage, S3Storage)
        storage.save("hello.txt", io.BytesIO(b"hello"))
        storage.check()
        assert get_storage() is storage
    head = s3_server.client().head_object(Bucket=bucket, Key="files/hello.txt")
    assert head["ContentLength"] == 5


def test_delete_many_removes_every_key_in_batches(storage, s3_server, bucket, monkeypatch):
    monkeypatch.setattr("edcrm.storage.s3.DELETE_BATCH", 2)
    keys = [f"uploads/u/chunks/{index:05d}" for index in range(5)]
    for key in [*keys, "uploads/other/kept"]:
        storage.save(key, io.BytesIO(key.encode()))
    requests_made = []
    storage.client.meta.events.register("before-call.s3.DeleteObjects", lambda **_: requests_made.append(1))

    storage.delete_many([*keys, "uploads/u/never-stored"])  # a missing key is no error

    assert len(requests_made) == 3  # 6 keys, 2 a request
    assert not any(storage.exists(key) for key in keys)
    assert storage.exists("uploads/other/kept")


def test_delete_many_refuses_a_key_that_could_escape(storage):
    with pytest.raises(InvalidKey):
        storage.delete_many(["uploads/ok", "../outside"])


# -- outages: every operation says StorageUnavailable, whatever botocore raised ----------------------------


def test_every_operation_raises_storage_unavailable_while_s3_is_down(storage, s3_server, tmp_path):
    storage.save("kept", io.BytesIO(b"data"))
    spool = tmp_path / "spool"
    spool.write_bytes(b"x" * 100)
    operations = {
        "save": lambda: storage.save("a", io.BytesIO(b"x")),
        "save_file": lambda: storage.save_file("a", spool),
        "assemble": lambda: storage.assemble("a", [b"x"], assembled),
        "open": lambda: storage.open("kept"),
        "exists": lambda: storage.exists("kept"),
        "size": lambda: storage.size("kept"),
        "delete": lambda: storage.delete("kept"),
        "delete_many": lambda: storage.delete_many(["kept"]),
        "check": storage.check,
    }
    raised = {}
    with open(tmp_path / "assembled", "w+b") as assembled, s3_server.stopped():
        for name, operation in operations.items():
            try:
                operation()
            except Exception as error:
                raised[name] = error
    assert {name: type(error).__name__ for name, error in raised.items()} == dict.fromkeys(
        operations, "StorageUnavailable"
    )
    assert all("Could not connect" in str(error) for error in raised.values())
    assert storage.open("kept").read() == b"data"  # nothing was lost


def client_error(status: int, code: str) -> ClientError:
    answer = {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(answer, "PutObject")


@pytest.mark.parametrize(
    ("status", "code"), [(500, "InternalError"), (503, "SlowDown"), (400, "RequestTimeout")]
)
def test_answers_s3_may_take_later_are_storage_unavailable(storage, monkeypatch, status, code):
    def failing(**_):
        raise client_error(status, code)

    monkeypatch.setattr(storage.client, "put_object", failing)
    with pytest.raises(StorageUnavailable) as raised:
        storage.save("a", io.BytesIO(b"x"))
    assert isinstance(raised.value.__cause__, ClientError)


def test_refusals_stay_what_they_are(storage, monkeypatch):
    def forbidden(**_):
        raise client_error(403, "AccessDenied")

    monkeypatch.setattr(storage.client, "put_object", forbidden)
    with pytest.raises(ClientError):
        storage.save("a", io.BytesIO(b"x"))
    with pytest.raises(ObjectNotFound):
        storage.open("no-such-key")


def test_a_connection_lost_mid_read_is_storage_unavailable(storage, monkeypatch):
    from botocore.exceptions import ResponseStreamingError

    storage.save("kept", io.BytesIO(b"data" * 1000))
    body = storage.open("kept")

    def cut(size=None):
        raise ResponseStreamingError(error="Connection broken: IncompleteRead(100 bytes read)")

    monkeypatch.setattr(body._body, "read", cut)
    with body, pytest.raises(StorageUnavailable, match="mid-read"):
        body.read(10)
