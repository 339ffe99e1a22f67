"""The slimmed botocore data (edcrm.storage.botocore_data) makes the same S3 client as botocore's own."""

from __future__ import annotations

import boto3
import pytest

from edcrm.storage import botocore_data
from edcrm.storage.s3 import client_config

CREDENTIALS = {"aws_access_key_id": "a", "aws_secret_access_key": "b"}


@pytest.fixture
def slim_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("EDCRM_BOTOCORE_CACHE", str(tmp_path))
    monkeypatch.delenv("AWS_DATA_PATH", raising=False)
    return botocore_data.cache_folder()


def clients(region: str, **options):
    slim = boto3.session.Session(botocore_session=botocore_data.session())
    full = boto3.session.Session()
    return [
        session.client("s3", region_name=region, config=client_config(), **CREDENTIALS, **options)
        for session in (slim, full)
    ]


def test_made_once_then_loaded_with_botocore_s_own_semantics(slim_folder):
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
