"""GET /healthz: 200 when the database, the broker and the storage answer; 503 naming what is down."""

from __future__ import annotations

import pytest

from edcrm import create_app
from edcrm.extensions import db
from tests.support.s3_server import free_port

ALL_OK = {"database": "ok", "broker": "ok", "storage": "ok"}


@pytest.fixture
def make_client(tmp_path, monkeypatch):
    """A test client of an app with these configuration overrides (no database tables needed)."""
    monkeypatch.setenv("EDCRM_INSTANCE_PATH", str(tmp_path / "instance"))
    apps = []

    def make(**overrides):
        config = {
            "TESTING": True,
            "SECRET_KEY": "test-secret",
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'edcrm.sqlite3'}",
            "STORAGE_URL": (tmp_path / "storage").as_uri(),
        }
        app = create_app(config | overrides)
        apps.append(app)
        return app.test_client()

    yield make
    for app in apps:
        with app.app_context():
            db.engine.dispose()


def test_all_ok_without_any_credentials(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.is_json
    assert response.get_json() == ALL_OK


def test_database_down(make_client):
    # Nothing listens on this port: connections are refused at once.
    client = make_client(
        SQLALCHEMY_DATABASE_URI=f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/edcrm"
    )
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["database"].startswith("down")
    assert body["storage"] == "ok" and body["broker"] == "ok"
    assert int(response.headers["Retry-After"]) > 0  # as every 503 does


def test_database_file_that_cannot_be_opened(make_client, tmp_path):
    client = make_client(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'no-such-folder' / 'db.sqlite3'}")
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["database"].startswith("down")


def test_storage_root_that_is_a_file(make_client, tmp_path):
    (tmp_path / "not-a-folder").write_text("oops")
    client = make_client(STORAGE_URL=(tmp_path / "not-a-folder").as_uri())
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["storage"].startswith("down")
    assert body["database"] == "ok" and body["broker"] == "ok"


def test_unsupported_storage_url(make_client):
    response = make_client(STORAGE_URL="ftp://files.example/edcrm").get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["storage"] == "down: ConfigError"


def test_s3_storage_up_then_down(make_client, s3_server):
    bucket = s3_server.create_bucket()
    client = make_client(STORAGE_URL=f"s3://{bucket}/edcrm", S3_ENDPOINT_URL=s3_server.endpoint_url)
    assert client.get("/healthz").get_json() == ALL_OK

    with s3_server.stopped():
        response = client.get("/healthz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["storage"] == "down: StorageUnavailable"  # the backend's domain error, not botocore's
    assert body["database"] == "ok"

    assert client.get("/healthz").status_code == 200  # back with the endpoint


def test_s3_bucket_missing(make_client, s3_server):
    client = make_client(STORAGE_URL="s3://edcrm-no-such-bucket", S3_ENDPOINT_URL=s3_server.endpoint_url)
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["storage"].startswith("down")
