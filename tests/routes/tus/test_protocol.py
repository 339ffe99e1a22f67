"""The tus 1.0 protocol at /api/recordings/tus/ as a client sees it: discovery, versions, creation and its
headers, HEAD, the refusals of PATCH that come before any byte is read, termination, expiry, method
override, who may do what."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from werkzeug.http import parse_date

from edcrm.extensions import db
from edcrm.models import RecordingUpload, Role
from edcrm.models.types import utcnow
from edcrm.recordings import upload_lock
from tests.support.people import bearer, make_user
from tests.support.recordings import make_call_log

from .conftest import BASE, TUS, Tus, metadata


def upload_id(url: str) -> str:
    return url.rsplit("/", 1)[-1]


# -- discovery and versions ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [BASE, BASE.rstrip("/"), BASE + "0123456789abcdef0123456789abcdef"])
def test_options_tells_the_version_extensions_and_limits_without_a_token(app, client, path):
    response = client.options(path)
    assert response.status_code == 204
    assert response.headers["Tus-Resumable"] == "1.0.0"
    assert response.headers["Tus-Version"] == "1.0.0"
    assert response.headers["Tus-Extension"].split(",") == [
        "creation",
        "creation-with-upload",
        "creation-defer-length",
        "termination",
        "checksum",
        "expiration",
        "concatenation",
    ]
    assert response.headers["Tus-Max-Size"] == str(app.config["MAX_RECORDING_BYTES"])
    assert response.headers["Tus-Checksum-Algorithm"] == "sha1,md5,sha256,crc32"
    assert response.data == b""


@pytest.mark.parametrize("version", [None, "0.2.2", "2.0.0", ""])
def test_a_request_without_tus_1_0_0_is_412_naming_the_version(tus, call_log, version):
    url = tus.new(call_log.id, 100)
    headers = {**tus.auth, "Upload-Length": "10", "Upload-Metadata": metadata(call_log_id=call_log.id)}
    if version is not None:
        headers["Tus-Resumable"] = version
    for response in (
        tus.client.post(BASE, headers=headers),
        tus.client.head(url, headers=headers),
        tus.client.patch(
            url, headers={**headers, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}
        ),
        tus.client.delete(url, headers=headers),
    ):
        assert response.status_code == 412
        assert response.headers["Tus-Version"] == "1.0.0"
        assert response.headers["Tus-Resumable"] == "1.0.0"
    # Nothing happened: the upload is still there, at 0.
    assert tus.head(url).headers["Upload-Offset"] == "0"


def test_every_answer_says_tus_resumable_the_refusals_too(tus, client):
    assert client.post(BASE, headers=TUS).headers["Tus-Resumable"] == "1.0.0"  # 401
    missing = tus.head(BASE + "0" * 32)
    assert missing.status_code == 404 and missing.headers["Tus-Resumable"] == "1.0.0"
    assert client.put(BASE, headers=TUS).headers["Tus-Resumable"] == "1.0.0"  # 405


# -- who may -------------------------------------------------------------------------------------------------


def test_without_a_token_every_operation_is_401_with_the_challenge(tus, client, call_log):
    url = tus.new(call_log.id, 10)
    for response in (
        client.post(BASE, headers={**TUS, "Upload-Length": "10"}),
        client.head(url, headers=TUS),
        client.patch(
            url, headers={**TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}
        ),
        client.delete(url, headers=TUS),
    ):
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="edcrm"'


def test_an_admin_token_is_403_uploads_are_the_telecallers(client, branch, call_log):
    admin = Tus(client, bearer(make_user(branch, Role.ADMIN, email="admin@kochi.test")))
    response = admin.create(call_log.id, 10)
    assert response.status_code == 403
    assert response.json["error"]["code"] == "forbidden"


def test_creating_for_another_telecallers_call_is_403_and_for_no_call_404(client, branch, tus, call_log):
    other = make_user(branch, Role.TELECALLER, email="other@kochi.test")
    theirs = make_call_log(branch, other)
    response = tus.create(theirs.id, 10)
    assert response.status_code == 403
    assert response.json["error"]["code"] == "forbidden"
    assert tus.create(2_000_000_000, 10).status_code == 404
    assert db.session.query(RecordingUpload).count() == 0


def test_another_telecallers_upload_is_not_found_whatever_the_method(client, branch, tus, call_log):
    url = tus.new(call_log.id, 10)
    other = Tus(client, bearer(make_user(branch, Role.TELECALLER, email="other@kochi.test")))
    assert other.head(url).status_code == 404
    assert other.head(url).data == b""
    assert other.patch(url, 0, b"RIFF").status_code == 404
    assert other.delete(url).status_code == 404
    assert tus.head(url).status_code == 200  # still there for its telecaller


def test_an_upload_of_the_chunk_api_is_no_tus_upload(tus, call_log):
    chunked = tus.client.post(
        "/api/recordings/uploads",
        json={"call_log_id": call_log.id, "filename": "c.wav", "expected_chunks": 1},
        headers=tus.auth,
    ).json["upload_id"]
    assert tus.head(BASE + chunked).status_code == 404


# -- creation ------------------------------------------------------------------------------------------------


def test_creation_answers_the_upload_url_and_expiry_and_head_tells_it_back(app, tus, call_log):
    before = datetime.now(UTC).replace(microsecond=0)
    response = tus.create(call_log.id, 1234, filename="call 1.wav", filetype="audio/wav", note=None)
    assert response.status_code == 201
    location = response.headers["Location"]
    assert location.startswith("http://localhost/api/recordings/tus/")
    assert len(upload_id(location)) == 32
    assert response.data == b""
    expires = parse_date(response.headers["Upload-Expires"])
    hours = app.config["TUS_UPLOAD_TTL_HOURS"]
    assert before + timedelta(hours=hours) <= expires <= datetime.now(UTC) + timedelta(hours=hours, seconds=1)
    assert "Upload-Offset" not in response.headers  # no bytes came with it

    head = tus.head(location.removeprefix("http://localhost"))
    assert head.status_code == 200
    assert head.data == b""
    assert head.headers["Upload-Offset"] == "0"
    assert head.headers["Upload-Length"] == "1234"
    assert "Upload-Defer-Length" not in head.headers
    assert head.headers["Cache-Control"] == "no-store"
    assert head.headers["Upload-Expires"] == response.headers["Upload-Expires"]
    assert head.headers["Upload-Metadata"] == metadata(
        call_log_id=call_log.id, filename="call 1.wav", filetype="audio/wav", note=None
    )
    assert "Upload-Concat" not in head.headers
    # The upload is the one the chunk API's status route reports on.
    status = tus.client.get(f"/api/recordings/uploads/{upload_id(location)}", headers=tus.auth)
    assert status.status_code == 200 and status.json["status"] == "receiving"


def test_a_deferred_length_is_told_as_such(tus, call_log):
    url = tus.new(call_log.id, None)
    head = tus.head(url)
    assert head.headers["Upload-Defer-Length"] == "1"
    assert "Upload-Length" not in head.headers


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({"Upload-Length": "-1"}, "invalid_header"),
        ({"Upload-Length": "ten"}, "invalid_header"),
        ({"Upload-Length": "1e3"}, "invalid_header"),
        ({"Upload-Defer-Length": "2"}, "invalid_header"),
        ({"Upload-Length": "10", "Upload-Defer-Length": "1"}, "invalid_header"),
        ({}, "invalid_header"),  # neither a length nor a deferred one
        ({"Upload-Length": "10", "Upload-Metadata": "call_log_id !!notbase64"}, "invalid_header"),
        ({"Upload-Length": "10", "Upload-Metadata": "call_log_id MQ== extra"}, "invalid_header"),
        ({"Upload-Length": "10", "Upload-Metadata": "filename Y2FsbA=="}, "invalid_metadata"),
        ({"Upload-Length": "10", "Upload-Metadata": "call_log_id YWJj"}, "invalid_metadata"),  # "abc"
        ({"Upload-Length": "10", "Upload-Concat": "sideways"}, "invalid_header"),
        ({"Upload-Concat": "final;"}, "concat_invalid"),
        ({"Upload-Concat": "final;/elsewhere/0123456789abcdef0123456789abcdef"}, "concat_invalid"),
    ],
)
def test_malformed_creation_headers_are_400_and_create_nothing(tus, call_log, headers, code):
    sent = {"Upload-Metadata": metadata(call_log_id=call_log.id), **headers}
    response = tus.client.post(BASE, headers=tus.headers(sent))
    assert response.status_code == 400, response.json
    assert response.json["error"]["code"] == code
    assert db.session.query(RecordingUpload).count() == 0


def test_metadata_keys_may_not_repeat(tus, call_log):
    value = metadata(call_log_id=call_log.id)
    response = tus.client.post(
        BASE, headers=tus.headers({"Upload-Length": "10", "Upload-Metadata": f"{value},{value}"})
    )
    assert response.status_code == 400


def test_a_length_over_tus_max_size_is_413(app, tus, call_log):
    limit = app.config["MAX_RECORDING_BYTES"]
    response = tus.create(call_log.id, limit + 1)
    assert response.status_code == 413
    assert response.json["error"] == {
        "code": "too_large",
        "message": f"A recording may be at most {limit} bytes (Tus-Max-Size).",
        "limit": limit,
    }
    assert tus.create(call_log.id, limit).status_code == 201


def test_a_bad_sha256_in_the_metadata_is_refused(tus, call_log):
    response = tus.create(call_log.id, 10, sha256="not-a-digest")
    assert response.status_code == 422
    assert response.json["error"]["code"] == "invalid_upload"


def test_a_partial_upload_needs_no_call_log(tus):
    url = tus.new(None, 10, headers={"Upload-Concat": "partial"})
    head = tus.head(url)
    assert head.headers["Upload-Concat"] == "partial"
    assert "Upload-Metadata" not in head.headers


def test_a_final_upload_of_unfinished_partials_is_refused(tus, call_log):
    partial = tus.new(None, 10, headers={"Upload-Concat": "partial"})
    response = tus.client.post(
        BASE,
        headers=tus.headers(
            {"Upload-Concat": f"final;{partial}", "Upload-Metadata": metadata(call_log_id=call_log.id)}
        ),
    )
    assert response.status_code == 400
    assert response.json["error"]["code"] == "concat_invalid"


def test_a_final_upload_of_someone_elses_partial_is_404(client, branch, tus, call_log):
    other = Tus(client, bearer(make_user(branch, Role.TELECALLER, email="other@kochi.test")))
    theirs = other.new(None, 10, headers={"Upload-Concat": "partial"})
    response = tus.client.post(
        BASE,
        headers=tus.headers(
            {
                "Upload-Concat": f"final;http://localhost{theirs}",
                "Upload-Metadata": metadata(call_log_id=call_log.id),
            }
        ),
    )
    assert response.status_code == 404


def test_a_creation_body_of_another_type_is_415(tus, call_log):
    response = tus.client.post(
        BASE,
        headers=tus.headers({"Upload-Length": "4", "Upload-Metadata": metadata(call_log_id=call_log.id)}),
        data=b"RIFF",
        content_type="text/plain",
    )
    assert response.status_code == 415
    assert db.session.query(RecordingUpload).count() == 0


def test_creation_works_with_csrf_protection_on(tmp_path, new_sqlite_database):
    """The web's CSRF protection leaves tus alone, as it does the rest of /api/."""
    from edcrm import create_app

    app = create_app(
        {
            "TESTING": True,
            "EDCRM_INSTANCE_PATH": str(tmp_path / "instance"),
            "SECRET_KEY": "test-secret",
            "SQLALCHEMY_DATABASE_URI": new_sqlite_database(),
            "STORAGE_URL": (tmp_path / "storage").as_uri(),
            "WTF_CSRF_ENABLED": True,
        }
    )
    with app.app_context():
        from edcrm.models import Branch

        branch = Branch(name="Kochi")
        db.session.add(branch)
        db.session.commit()
        telecaller = make_user(branch, Role.TELECALLER, email="caller@kochi.test")
        call_log = make_call_log(branch, telecaller)
        tus = Tus(app.test_client(), bearer(telecaller))
        url = tus.new(call_log.id, 10)
        assert tus.delete(url).status_code == 204
        db.session.remove()
        db.engine.dispose()


# -- PATCH: what is refused before a byte is read ---------------------------------------------------------


def test_a_patch_of_another_content_type_is_415(tus, call_log):
    url = tus.new(call_log.id, 10)
    response = tus.patch(url, 0, b"RIFF", headers={"Content-Type": "application/octet-stream"})
    assert response.status_code == 415
    assert response.json["error"]["code"] == "unsupported_media_type"
    assert tus.head(url).headers["Upload-Offset"] == "0"


@pytest.mark.parametrize("offset", [None, "-1", "x", "1.5"])
def test_a_patch_without_a_valid_upload_offset_is_400(tus, call_log, offset):
    url = tus.new(call_log.id, 10)
    headers = {**tus.headers(None), "Content-Type": "application/offset+octet-stream"}
    if offset is not None:
        headers["Upload-Offset"] = offset
    response = tus.client.patch(url, headers=headers, data=b"RIFF")
    assert response.status_code == 400
    assert response.json["error"]["code"] == "invalid_header"


def test_a_patch_at_another_offset_is_409_with_the_uploads_offset(tus, call_log):
    url = tus.new(call_log.id, 10)
    response = tus.patch(url, 5, b"12345")
    assert response.status_code == 409
    assert response.headers["Upload-Offset"] == "0"
    assert response.json["error"]["code"] == "offset_mismatch"
    assert response.json["error"]["offset"] == 0


@pytest.mark.parametrize(
    ("checksum", "code"),
    [
        ("sha512 AAAA", "checksum_unsupported"),
        ("sha1", "invalid_header"),
        ("sha1 not*base64", "invalid_header"),
        ("sha1 AAAA BBBB", "invalid_header"),
    ],
)
def test_a_malformed_or_unsupported_checksum_is_400(tus, call_log, checksum, code):
    url = tus.new(call_log.id, 10)
    response = tus.patch(url, 0, b"RIFF", headers={"Upload-Checksum": checksum})
    assert response.status_code == 400
    assert response.json["error"]["code"] == code


def test_a_patch_while_another_writes_is_423(app, tus, call_log):
    url = tus.new(call_log.id, 10)
    with upload_lock.hold(upload_id(url)):
        response = tus.patch(url, 0, b"RIFF")
        assert response.status_code == 423
        assert response.json["error"]["code"] == "upload_locked"
        assert tus.head(url).status_code == 200  # HEAD is never behind the lock
        assert tus.delete(url).status_code == 423
    assert tus.head(url).headers["Upload-Offset"] == "0"


def test_a_length_that_changes_is_400(tus, call_log):
    url = tus.new(call_log.id, 10)
    response = tus.patch(url, 0, b"", headers={"Upload-Length": "11"})
    assert response.status_code == 400
    assert response.json["error"]["code"] == "length_conflict"


# -- termination and expiry -------------------------------------------------------------------------------


def test_a_terminated_upload_is_gone(tus, call_log):
    url = tus.new(call_log.id, 10)
    response = tus.delete(url)
    assert response.status_code == 204
    assert response.data == b""
    head = tus.head(url)
    assert head.status_code == 410
    assert head.data == b""
    assert tus.patch(url, 0, b"RIFF").status_code == 410
    status = tus.client.get(f"/api/recordings/uploads/{upload_id(url)}", headers=tus.auth).json
    assert status["status"] == "cancelled"


def test_an_expired_upload_is_410(tus, call_log):
    url = tus.new(call_log.id, 10)
    upload = db.session.get(RecordingUpload, upload_id(url))
    upload.expires_at = utcnow() - timedelta(seconds=1)
    db.session.commit()
    head = tus.head(url)
    assert head.status_code == 410 and head.data == b""
    response = tus.patch(url, 0, b"RIFF")
    assert response.status_code == 410
    assert response.json["error"]["code"] == "upload_expired"


def test_an_unknown_upload_is_404_without_a_body_to_head(tus):
    for path in (BASE + "0" * 32, BASE + "not-an-id"):
        head = tus.head(path)
        assert head.status_code == 404 and head.data == b""
        assert tus.patch(path, 0, b"RIFF").status_code == 404
        assert tus.delete(path).status_code == 404


# -- X-HTTP-Method-Override ----------------------------------------------------------------------------------


def test_a_post_stands_for_head_patch_and_delete(tus, call_log):
    url = tus.new(call_log.id, 10)

    head = tus.client.post(url, headers=tus.headers({"X-HTTP-Method-Override": "HEAD"}))
    assert head.status_code == 200
    assert head.data == b""
    assert (head.headers["Upload-Offset"], head.headers["Upload-Length"]) == ("0", "10")

    patch = tus.client.post(
        url,
        headers=tus.headers(
            {
                "X-HTTP-Method-Override": "PATCH",
                "Upload-Offset": "3",
                "Content-Type": "application/offset+octet-stream",
            }
        ),
        data=b"RIFF",
    )
    assert patch.status_code == 409  # taken as a PATCH: at the wrong offset
    assert patch.headers["Upload-Offset"] == "0"

    assert tus.client.post(url, headers=tus.headers({"X-HTTP-Method-Override": "DELETE"})).status_code == 204
    assert tus.head(url).status_code == 410


def test_a_post_to_an_upload_without_an_override_is_400(tus, call_log):
    url = tus.new(call_log.id, 10)
    assert tus.client.post(url, headers=tus.headers(None)).status_code == 400
    assert tus.client.post(url, headers=tus.headers({"X-HTTP-Method-Override": "GET"})).status_code == 400


def test_an_override_on_the_creation_url_is_405(tus, call_log):
    headers = {
        "X-HTTP-Method-Override": "PATCH",
        "Upload-Length": "10",
        "Upload-Metadata": metadata(call_log_id=call_log.id),
    }
    response = tus.client.post(BASE, headers=tus.headers(headers))
    assert response.status_code == 405
    assert db.session.query(RecordingUpload).count() == 0
