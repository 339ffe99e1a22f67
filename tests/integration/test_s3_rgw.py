"""The S3 backend against Ceph RGW, a production S3 implementation (Debian's radosgw, one node on
127.0.0.1, started by tests/support/rgw.py), where moto could agree with boto3 on something S3 servers
do not: multipart parts and their sizes, DeleteObjects, presigned URLs with response overrides, and the
assembly of a recording's chunks into one object."""

from __future__ import annotations

import hashlib
import io
import os
import random
import tempfile

import pytest
import requests
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from edcrm.storage import ObjectNotFound, S3Storage
from edcrm.storage.base import StorageUnavailable

MIB = 1024 * 1024


@pytest.fixture
def bucket(rgw_s3):
    name = rgw_s3.create_bucket()
    yield name
    rgw_s3.delete_bucket(name)  # memstore keeps every object in the OSD's memory


@pytest.fixture
def storage(rgw_s3, bucket):
    return S3Storage(bucket, "edcrm/test", endpoint_url=rgw_s3.endpoint_url, region="us-east-1")


def test_save_open_and_delete_round_trip(storage, rgw_s3, bucket):
    data = os.urandom(MIB + 5)
    assert storage.save("recordings/7/call.m4a", io.BytesIO(data)) == len(data)

    assert storage.exists("recordings/7/call.m4a") and storage.size("recordings/7/call.m4a") == len(data)
    with storage.open("recordings/7/call.m4a") as body:
        assert body.read(10) + body.read() == data
    raw = rgw_s3.client().get_object(Bucket=bucket, Key="edcrm/test/recordings/7/call.m4a")
    assert raw["Body"].read() == data

    storage.delete("recordings/7/call.m4a")
    storage.delete("recordings/7/call.m4a")  # what is gone deletes without an error
    with pytest.raises(ObjectNotFound):
        storage.open("recordings/7/call.m4a")


def test_a_large_object_goes_up_in_parts(rgw_s3, bucket):
    parts = TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB, max_concurrency=2)
    storage = S3Storage(bucket, endpoint_url=rgw_s3.endpoint_url, transfer_config=parts)
    data = os.urandom(11 * MIB)

    assert storage.save("big", io.BytesIO(data)) == len(data)

    # RGW (Pacific) ignores HEAD's PartNumber; a multipart object's ETag ends in its number of parts.
    head = rgw_s3.client().head_object(Bucket=bucket, Key="big")
    assert head["ETag"].strip('"').endswith("-3")
    digest = hashlib.sha256()
    with storage.open("big") as body:
        for block in iter(lambda: body.read(MIB), b""):
            digest.update(block)
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()


def test_delete_many_removes_every_key(storage, rgw_s3, bucket):
    keys = [f"chunks/{n}" for n in range(25)]
    for key in keys:
        storage.save(key, io.BytesIO(key.encode()))
    storage.save("keep", io.BytesIO(b"kept"))

    storage.delete_many([*keys, "never-there"])

    listed = rgw_s3.client().list_objects_v2(Bucket=bucket)
    assert [item["Key"] for item in listed["Contents"]] == ["edcrm/test/keep"]


def test_presigned_url_serves_the_object_with_its_type_and_name(storage):
    data = os.urandom(1000)
    storage.save("recordings/1/a", io.BytesIO(data))

    url = storage.url_for_download("recordings/1/a", 300, filename="call 1.m4a", content_type="audio/mp4")
    response = requests.get(url, timeout=10)

    assert response.status_code == 200 and response.content == data
    assert response.headers["Content-Type"] == "audio/mp4"
    assert "attachment" in response.headers["Content-Disposition"]
    assert "call%201.m4a" in response.headers["Content-Disposition"]
    # A range, as a media player seeks.
    ranged = requests.get(url, headers={"Range": "bytes=10-19"}, timeout=10)
    assert ranged.status_code == 206 and ranged.content == data[10:20]


def test_a_presigned_url_for_another_key_is_refused(storage, rgw_s3):
    storage.save("recordings/1/a", io.BytesIO(b"secret"))
    url = storage.url_for_download("recordings/1/a", 300)

    tampered = url.replace("recordings/1/a", "recordings/1/b")
    assert requests.get(tampered, timeout=10).status_code == 403


def test_assemble_gathers_chunks_into_one_multipart_object(storage, rgw_s3, bucket):
    generator = random.Random(5)
    blocks = [generator.randbytes(3 * MIB) for _ in range(6)] + [b"tail"]  # 18 MiB: three 8 MiB parts
    whole = b"".join(blocks)

    with tempfile.NamedTemporaryFile(prefix="edcrm-test-spool-") as spool:
        assert storage.assemble("recordings/2/call", iter(blocks), spool) == len(whole)

    with storage.open("recordings/2/call") as body:
        assert body.read() == whole
    head = rgw_s3.client().head_object(Bucket=bucket, Key="edcrm/test/recordings/2/call")
    assert head["ETag"].strip('"').endswith("-3")


def test_assemble_refused_by_its_check_leaves_no_object_and_no_parts(storage, rgw_s3, bucket):
    blocks = [os.urandom(MIB) for _ in range(10)]

    def refuse() -> None:
        raise ValueError("not what the phone announced")

    with tempfile.NamedTemporaryFile(prefix="edcrm-test-spool-") as spool, pytest.raises(ValueError):
        storage.assemble("recordings/3/call", iter(blocks), spool, verify=refuse)

    assert not storage.exists("recordings/3/call")
    assert rgw_s3.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_a_missing_bucket_is_a_refusal_not_an_outage(rgw_s3):
    storage = S3Storage("edcrm-test-never-made", endpoint_url=rgw_s3.endpoint_url)
    with pytest.raises(ClientError) as raised:
        storage.check()
    assert not isinstance(raised.value, StorageUnavailable)
    assert raised.value.response["Error"]["Code"] in {"404", "NoSuchBucket"}
