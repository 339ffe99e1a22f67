"""The slimmed botocore data (edcrm.storage.botocore_data) makes the same S3 client as botocore's own;
without it, clients load botocore's own data."""

from __future__ import annotations

import os
import subprocess
import sys

import boto3
import pytest

from edcrm.storage import botocore_data
from edcrm.storage.s3 import client_config

CREDENTIALS = {"aws_access_key_id": "a", "aws_secret_access_key": "b"}


@pytest.fixture
def no_slim_folder(tmp_path, monkeypatch):
    """Where the data would be, not made yet."""
    monkeypatch.setenv("EDCRM_BOTOCORE_CACHE", str(tmp_path))
    monkeypatch.delenv("AWS_DATA_PATH", raising=False)
    return botocore_data.data_folder()


@pytest.fixture(scope="module")
def slim_cache(tmp_path_factory):
    """The data, made as make's install step makes it: once for the module, as the tests only read it
    (making it costs a second)."""
    cache = tmp_path_factory.mktemp("botocore-cache")
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("EDCRM_BOTOCORE_CACHE", str(cache))
        monkeypatch.delenv("AWS_DATA_PATH", raising=False)
        assert botocore_data.main([]) == 0
    return cache


@pytest.fixture
def slim_folder(slim_cache, monkeypatch):
    """Where the data is, made."""
    monkeypatch.setenv("EDCRM_BOTOCORE_CACHE", str(slim_cache))
    monkeypatch.delenv("AWS_DATA_PATH", raising=False)
    return botocore_data.data_folder()


def clients(region: str, **options):
    slim = boto3.session.Session(botocore_session=botocore_data.session())
    full = boto3.session.Session()
    return [
        session.client("s3", region_name=region, config=client_config(), **CREDENTIALS, **options)
        for session in (slim, full)
    ]


def test_loaded_with_botocore_s_own_semantics(slim_folder):
    session = botocore_data.session()
    assert session.get_component("data_loader").load_data_with_path("endpoints")[1].startswith(slim_folder)
    slim, full = clients("eu-west-1")
    assert slim.meta.service_model.operation_names == full.meta.service_model.operation_names
    assert slim.meta.partition == full.meta.partition == "aws"
    assert slim.exceptions.NoSuchKey.__name__ == "NoSuchKey"
    assert slim._endpoint.host == full._endpoint.host  # the bundled data's rules: same endpoint


@pytest.mark.parametrize("region", ["us-east-1", "eu-west-1", "ap-south-1", "cn-north-1", "us-gov-west-1"])
def test_the_same_signed_urls_as_botocore_s_data(slim_folder, region):
    params = {"Bucket": "recordings", "Key": "a/b.wav", "ResponseContentType": "audio/wav"}
    urls = [
        client.generate_presigned_url("get_object", Params=params, ExpiresIn=60).split("X-Amz-Date")[0]
        for client in clients(region)
    ]
    assert urls[0] == urls[1]


def test_a_custom_endpoint_too(slim_folder):
    slim, full = clients("us-east-1", endpoint_url="http://127.0.0.1:9000")
    assert slim._endpoint.host == full._endpoint.host == "http://127.0.0.1:9000"


def test_user_models_keep_botocore_s_own_loader(slim_folder, monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_DATA_PATH", str(tmp_path / "models"))
    session = botocore_data.session()
    assert not isinstance(session.get_component("data_loader"), botocore_data.SlimLoader)


def test_without_the_data_clients_load_botocore_s_own_and_nothing_is_made(no_slim_folder, monkeypatch):
    def no_subprocess(*args, **kwargs):
        raise AssertionError("no process may be spawned to make the data")

    monkeypatch.setattr(subprocess, "run", no_subprocess)
    monkeypatch.setattr(subprocess, "Popen", no_subprocess)
    session = botocore_data.session()
    assert not isinstance(session.get_component("data_loader"), botocore_data.SlimLoader)
    slim, full = clients("eu-west-1")
    assert slim.meta.service_model.operation_names == full.meta.service_model.operation_names
    assert not os.path.exists(no_slim_folder)


def test_made_by_the_install_step_in_the_environment(tmp_path, monkeypatch):
    """`python -m edcrm.storage.botocore_data`, as make's install step runs it: into the environment's
    share/edcrm (the folder S3 clients look in), once."""
    monkeypatch.delenv("EDCRM_BOTOCORE_CACHE", raising=False)
    assert botocore_data.data_folder().startswith(os.path.join(sys.prefix, "share", "edcrm"))
    monkeypatch.setenv("EDCRM_BOTOCORE_CACHE", str(tmp_path))
    run = [sys.executable, "-m", "edcrm.storage.botocore_data"]
    made = subprocess.run(run, capture_output=True, text=True, check=True)
    assert "made in" in made.stdout and os.path.isdir(botocore_data.data_folder())
    again = subprocess.run(run, capture_output=True, text=True, check=True)
    assert "is in" in again.stdout


#: The operations S3Storage calls, with the members it sends that are not required.
USED = {
    "CreateMultipartUpload": {"ContentType"},
    "UploadPart": {"ContentLength"},
    "UploadPartCopy": {"CopySourceRange"},
    "CompleteMultipartUpload": {"MultipartUpload"},
    "AbortMultipartUpload": set(),
    "ListParts": {"MaxParts"},
    "GetObject": {"Range", "ResponseContentType", "ResponseContentDisposition"},
    "HeadObject": set(),
    "CopyObject": set(),
    "PutObject": set(),
    "DeleteObject": set(),
    "DeleteObjects": set(),
    "HeadBucket": set(),
}


def test_the_slimmed_model_has_every_operation_the_storage_calls(slim_folder):
    slim, _ = clients("us-east-1")
    model = slim.meta.service_model
    for name, members in USED.items():
        operation = model.operation_model(name)  # OperationNotFoundError if the slimming dropped it
        assert members <= set(operation.input_shape.members), name
