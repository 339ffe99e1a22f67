"""Storage.assemble: blocks of any size, in order, into one object through a local spool file, with a
check before the object appears. Local folder, and S3 on moto's server over real HTTP (boto3 not
patched): small chunks are gathered into multipart parts of at least 5 MiB, and a failure or a refused
check aborts the multipart upload."""

from __future__ import annotations

import hashlib
import random
import tempfile

import pytest

from edcrm.storage import LocalStorage, ObjectNotFound, S3Storage
from edcrm.storage import s3 as s3_module

MIB = 1024 * 1024


def chunks(count: int, size: int, seed: int = 3) -> list[bytes]:
    generator = random.Random(seed)
    return [generator.randbytes(size) for _ in range(count)]


class Refused(Exception):
    pass


def refuse() -> None:
    raise Refused("the bytes are not what the client announced")


def failing(blocks: list[bytes], after: int):
    """The blocks, then a storage outage after `after` of them."""
    yield from blocks[:after]
    raise ConnectionError("storage went away")


@pytest.fixture
def spool():
    with tempfile.NamedTemporaryFile(prefix="edcrm-test-spool-") as file:
        yield file


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path):
    if request.param == "local":
        return LocalStorage(tmp_path / "storage")
    server = request.getfixturevalue("s3_server")
    return S3Storage(server.create_bucket(), "edcrm", endpoint_url=server.endpoint_url, region="us-east-1")


def read(storage, key: str) -> bytes:
    with storage.open(key) as stored:
        return stored.read()


def test_blocks_become_one_byte_identical_object_and_the_spool_keeps_a_copy(storage, spool):
    blocks = [*chunks(5, 300_000), b"tail"]
    whole = b"".join(blocks)
    assert storage.assemble("recordings/1/a.wav", iter(blocks), spool) == len(whole)
    assert read(storage, "recordings/1/a.wav") == whole
    spool.seek(0)
    assert spool.read() == whole


def test_a_refused_check_stores_nothing(storage, spool):
    with pytest.raises(Refused):
        storage.assemble("recordings/1/a.wav", iter(chunks(3, 1000)), spool, refuse)
    with pytest.raises(ObjectNotFound):
        storage.size("recordings/1/a.wav")


# -- S3: multipart ----------------------------------------------------------------------------------------


@pytest.fixture
def s3(s3_server):
    return S3Storage(
        s3_server.create_bucket(), "edcrm", endpoint_url=s3_server.endpoint_url, region="us-east-1"
    )


def parts_and_uploads(s3, key: str) -> tuple[list[int], list]:
    client = s3.client
    object_key = s3.object_key(key)
    head = client.head_object(Bucket=s3.bucket, Key=object_key, PartNumber=1)
    count = head.get("PartsCount", 1)
    sizes = [
        client.head_object(Bucket=s3.bucket, Key=object_key, PartNumber=number)["ContentLength"]
        for number in range(1, count + 1)
    ]
    return sizes, client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads", [])


def test_small_chunks_are_gathered_into_parts_of_at_least_5_mib(s3, spool):
    """21 chunks of 1 MiB and a short last one: three parts (8 + 8 + 5 MiB and a bit), byte-identical,
    and the SHA-256 hashed on the way equals the object's."""
    blocks = [*chunks(21, MIB), b"x" * 1234]
    whole = b"".join(blocks)
    digest = hashlib.sha256()

    def hashed():
        for block in blocks:
            digest.update(block)
            yield block

    assert s3.assemble("recordings/7/b.m4a", hashed(), spool) == len(whole)
    sizes, in_progress = parts_and_uploads(s3, "recordings/7/b.m4a")
    assert sizes == [8 * MIB, 8 * MIB, 5 * MIB + 1234]
    assert all(size >= 5 * MIB for size in sizes[:-1]) and in_progress == []
    stored = read(s3, "recordings/7/b.m4a")
    assert stored == whole
    assert hashlib.sha256(stored).hexdigest() == digest.hexdigest()


def test_a_failure_midway_aborts_the_multipart_upload(s3, spool):
    blocks = chunks(20, MIB)
    with pytest.raises(ConnectionError):
        s3.assemble("recordings/7/c.m4a", failing(blocks, 17), spool)  # two parts already sent
    assert not s3.exists("recordings/7/c.m4a")
    assert s3.client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads", []) == []


def test_a_refused_check_after_parts_went_up_aborts_them(s3, spool):
    with pytest.raises(Refused):
        s3.assemble("recordings/7/d.m4a", iter(chunks(18, MIB)), spool, refuse)
    assert not s3.exists("recordings/7/d.m4a")
    assert s3.client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads", []) == []


def test_parts_go_up_while_the_blocks_are_still_coming(s3, spool, monkeypatch):
    """The upload overlaps the reading: the first part is sent before the last block is read."""
    sent_parts_when_read: list[int] = []
    real_send = s3_module.S3Storage._send_part
    sent = []

    def counting_send(self, *args):
        sent.append(args[4])  # the part index
        return real_send(self, *args)

    monkeypatch.setattr(s3_module.S3Storage, "_send_part", counting_send)

    def blocks():
        for block in chunks(20, MIB):
            sent_parts_when_read.append(len(sent))
            yield block

    s3.assemble("recordings/7/e.m4a", blocks(), spool)
    assert sent_parts_when_read[-1] == 2  # parts 0 and 1 went before the 20th block was read
    assert sent == [0, 1, 2]
