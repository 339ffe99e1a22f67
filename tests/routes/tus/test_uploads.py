"""Whole tus uploads through the protocol, on local storage, to the Recording the recordings actor makes:
PATCHes with each checksum, creation with upload, a length declared late, concatenation, and the
refusals that need bytes (460, 413, 422)."""

from __future__ import annotations

import base64
import hashlib
import io
import zlib

import pytest

from edcrm.extensions import db
from edcrm.models import RecordingUpload, UploadStatus
from tests.recordings.test_tus_append import MIB, random_wav
from tests.support.audio_samples import wav
from tests.support.jobs import run_jobs
from tests.support.recordings import storage_files

from .conftest import BASE, metadata


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def checksum(algorithm: str, data: bytes) -> str:
    if algorithm == "crc32":
        return f"crc32 {b64(zlib.crc32(data).to_bytes(4, 'big'))}"
    return f"{algorithm} {b64(hashlib.new(algorithm, data).digest())}"


def upload_id(url: str) -> str:
    return url.rsplit("/", 1)[-1]


def status_of(tus, url: str) -> dict:
    response = tus.client.get(f"/api/recordings/uploads/{upload_id(url)}", headers=tus.auth)
    assert response.status_code == 200
    return response.json


def recording_of(tus, call_log) -> dict:
    recording = tus.client.get(f"/api/call-logs/{call_log.id}", headers=tus.auth).json["recording"]
    assert recording is not None
    return recording


def downloaded(tus, recording: dict) -> bytes:
    response = tus.client.get(recording["download_url"], headers=tus.auth)
    assert response.status_code == 200
    return response.data


def send_all(tus, url: str, data: bytes, size: int, algorithm: str | None = None) -> None:
    for start in range(0, len(data), size):
        piece = data[start : start + size]
        headers = {"Upload-Checksum": checksum(algorithm, piece)} if algorithm else None
        response = tus.patch(url, start, piece, headers=headers)
        assert response.status_code == 204, response.get_data(as_text=True)
        assert response.headers["Upload-Offset"] == str(start + len(piece))
        # Until the last byte it expires; finished, it is the recording job's and expires no more.
        finished = start + len(piece) == len(data) and tus.head(url).headers.get("Upload-Length")
        assert ("Upload-Expires" in response.headers) is not bool(finished)
        assert tus.head(url).headers["Upload-Offset"] == str(start + len(piece))


def test_a_recording_sent_in_patches_over_parts_becomes_its_recording(
    app, tus, call_log, stub_broker, stub_worker
):
    data = random_wav(5 * MIB + 3 * MIB // 2)  # one whole part of 5 MiB, and a tail promoted at the end
    app.config["TUS_PART_BYTES"] = 5 * MIB
    sha256 = hashlib.sha256(data).hexdigest()
    url = tus.new(call_log.id, len(data), filename="call.wav", filetype="audio/wav", sha256=sha256)
    send_all(tus, url, data, 2 * MIB, "sha1")
    assert status_of(tus, url)["status"] in ("processing", "completed")

    run_jobs(stub_broker, stub_worker, "recordings")

    status = status_of(tus, url)
    assert status["status"] == "completed", status
    recording = recording_of(tus, call_log)
    assert recording["id"] == status["recording_id"]
    assert (recording["size"], recording["sha256"], recording["content_type"]) == (
        len(data),
        sha256,
        "audio/wav",
    )
    assert downloaded(tus, recording) == data
    assert [name for name in storage_files(app) if name.startswith("uploads/")] == []
    # Finished: the upload takes no more bytes.
    assert tus.patch(url, len(data), b"x").status_code == 409


@pytest.mark.parametrize("algorithm", ["md5", "sha256", "crc32"])
def test_each_checksum_algorithm_is_checked(tus, call_log, algorithm):
    data = wav(0.5)
    url = tus.new(call_log.id, len(data))
    bad = checksum(algorithm, data[:100] + b"!")
    refused = tus.patch(url, 0, data[:100], headers={"Upload-Checksum": bad})
    assert refused.status_code == 460
    assert refused.status == "460 Checksum Mismatch"
    assert refused.json["error"]["code"] == "checksum_mismatch"
    assert tus.head(url).headers["Upload-Offset"] == "0"  # nothing of it kept
    send_all(tus, url, data, 1000, algorithm)


def test_creation_with_upload_takes_the_first_bytes(tus, call_log, stub_broker, stub_worker):
    data = wav(1.0)
    response = tus.create(call_log.id, len(data), data=data[:4000], filename="call.wav")
    assert response.status_code == 201
    assert response.headers["Upload-Offset"] == "4000"
    url = response.headers["Location"]
    assert tus.patch(url, 4000, data[4000:]).status_code == 204
    run_jobs(stub_broker, stub_worker, "recordings")
    assert downloaded(tus, recording_of(tus, call_log)) == data


def test_a_creation_whose_first_bytes_are_refused_still_names_its_upload(tus, call_log):
    data = wav(0.5)
    response = tus.create(
        call_log.id, len(data), data=data[:100], headers={"Upload-Checksum": checksum("sha1", b"other")}
    )
    assert response.status_code == 460
    url = response.headers["Location"]
    assert tus.head(url).headers["Upload-Offset"] == "0"


def test_a_length_declared_with_the_last_empty_patch_finishes_the_upload(
    tus, call_log, stub_broker, stub_worker
):
    """tusd#396: the length comes after the last bytes, in a PATCH of none; the tail is still promoted."""
    data = wav(1.0)
    url = tus.new(call_log.id, None, filename="call.wav")
    send_all(tus, url, data, 5000)
    assert tus.head(url).headers["Upload-Defer-Length"] == "1"
    response = tus.patch(url, len(data), b"", headers={"Upload-Length": str(len(data))})
    assert response.status_code == 204
    assert response.headers["Upload-Offset"] == str(len(data))
    head = tus.head(url)
    assert head.headers["Upload-Length"] == str(len(data))
    assert "Upload-Defer-Length" not in head.headers

    run_jobs(stub_broker, stub_worker, "recordings")
    assert downloaded(tus, recording_of(tus, call_log)) == data


def test_a_length_declared_with_the_last_bytes(tus, call_log, stub_broker, stub_worker):
    data = wav(1.0)
    url = tus.new(call_log.id, None)
    assert tus.patch(url, 0, data[:3000]).status_code == 204
    assert tus.patch(url, 3000, data[3000:], headers={"Upload-Length": str(len(data))}).status_code == 204
    run_jobs(stub_broker, stub_worker, "recordings")
    assert downloaded(tus, recording_of(tus, call_log)) == data


def test_a_length_below_the_bytes_received_is_400(tus, call_log):
    data = wav(0.5)
    url = tus.new(call_log.id, None)
    assert tus.patch(url, 0, data[:2000]).status_code == 204
    response = tus.patch(url, 2000, b"", headers={"Upload-Length": "1000"})
    assert response.status_code == 400
    assert response.json["error"]["code"] == "length_conflict"


def test_bytes_past_the_length_are_413_and_not_kept(tus, call_log):
    data = wav(0.5)
    url = tus.new(call_log.id, 1000)
    response = tus.patch(url, 0, data[:1001])
    assert response.status_code == 413
    assert tus.head(url).headers["Upload-Offset"] == "0"


def test_bytes_that_are_no_audio_fail_the_upload_with_its_reason(tus, call_log):
    url = tus.new(call_log.id, 1000)
    response = tus.patch(url, 0, b"<html>" + b"x" * 200)
    assert response.status_code == 422
    assert response.json["error"]["code"] == "not_a_recording"
    status = status_of(tus, url)
    assert status["status"] == "failed" and status["error"]


def test_a_patch_as_a_post_with_method_override(tus, call_log):
    data = wav(0.5)
    url = tus.new(call_log.id, len(data))
    headers = {
        "X-HTTP-Method-Override": "PATCH",
        "Upload-Offset": "0",
        "Content-Type": "application/offset+octet-stream",
    }
    response = tus.client.post(url, headers=tus.headers(headers), data=data[:500])
    assert response.status_code == 204
    assert response.headers["Upload-Offset"] == "500"


def test_partial_uploads_concatenate_into_the_recording(app, tus, call_log, stub_broker, stub_worker):
    """tus-js-client's parallelUploads: partials without metadata, then the final with it."""
    data = wav(2.0)
    cut = len(data) // 3
    pieces = [data[:cut], data[cut:]]
    partials = []
    for piece in pieces:
        url = tus.new(None, len(piece), headers={"Upload-Concat": "partial"})
        assert tus.patch(url, 0, piece).status_code == 204
        partials.append(url)
    final_urls = f"{partials[0]} http://localhost{partials[1]}"  # relative and absolute alike
    sha256 = hashlib.sha256(data).hexdigest()
    response = tus.client.post(
        BASE,
        headers=tus.headers(
            {
                "Upload-Concat": f"final;{final_urls}",
                "Upload-Metadata": metadata(call_log_id=call_log.id, filename="call.wav", sha256=sha256),
            }
        ),
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    final = response.headers["Location"]
    head = tus.head(final)
    assert head.headers["Upload-Concat"] == "final;" + " ".join(f"http://localhost{url}" for url in partials)
    assert head.headers["Upload-Length"] == head.headers["Upload-Offset"] == str(len(data))
    assert tus.patch(final, len(data), b"x").status_code == 403  # a final takes no bytes

    run_jobs(stub_broker, stub_worker, "recordings")

    recording = recording_of(tus, call_log)
    assert (recording["size"], recording["sha256"]) == (len(data), sha256)
    assert downloaded(tus, recording) == data
    assert status_of(tus, final)["status"] == "completed"


def test_a_wrong_sha256_in_the_metadata_fails_the_upload_with_the_reason(
    tus, call_log, stub_broker, stub_worker
):
    data = wav(0.5)
    url = tus.new(call_log.id, len(data), sha256="0" * 64)
    assert tus.patch(url, 0, data).status_code == 204
    run_jobs(stub_broker, stub_worker, "recordings")
    status = status_of(tus, url)
    assert status["status"] == "failed"
    assert "checksum" in status["error"]
    upload = db.session.get(RecordingUpload, upload_id(url))
    assert upload is not None and upload.status is UploadStatus.FAILED


# -- bodies as they come: chunked, cut off -----------------------------------------------------------------


def chunked_patch(tus, url: str, offset: int, data: bytes, headers=None):
    """A PATCH whose body has no Content-Length (Transfer-Encoding: chunked)."""
    sent = {
        **tus.headers(headers),
        "Upload-Offset": str(offset),
        "Content-Type": "application/offset+octet-stream",
        "Transfer-Encoding": "chunked",
    }
    # As gunicorn hands it over: no length, and a stream that ends where the body ends.
    framing = {"CONTENT_LENGTH": "", "wsgi.input_terminated": True}
    return tus.client.patch(url, headers=sent, input_stream=io.BytesIO(data), environ_overrides=framing)


def test_a_chunked_patch_is_taken_and_one_past_the_limit_is_413(app, tus, call_log):
    data = wav(0.5)
    url = tus.new(call_log.id, None)
    response = chunked_patch(tus, url, 0, data[:3000])
    assert response.status_code == 204, response.get_data(as_text=True)
    assert response.headers["Upload-Offset"] == "3000"

    app.config["MAX_RECORDING_BYTES"] = 5000
    refused = chunked_patch(tus, url, 3000, data[3000:6000])
    assert refused.status_code == 413
    assert refused.json["error"]["code"] == "too_large"
    assert tus.head(url).headers["Upload-Offset"] == "3000"


def cut_patch(tus, url: str, offset: int, data: bytes, announced: int, headers=None):
    """A PATCH announcing `announced` bytes whose client goes away after `data`."""
    sent = {
        **tus.headers(headers),
        "Upload-Offset": str(offset),
        "Content-Type": "application/offset+octet-stream",
    }
    framing = {"CONTENT_LENGTH": str(announced), "wsgi.input_terminated": True}
    return tus.client.patch(url, headers=sent, input_stream=io.BytesIO(data), environ_overrides=framing)


def test_a_patch_cut_off_keeps_what_arrived_so_the_client_resumes_from_there(tus, call_log):
    data = wav(0.5)
    url = tus.new(call_log.id, len(data))
    response = cut_patch(tus, url, 0, data[:2500], announced=len(data))
    assert response.status_code == 400
    assert response.json["error"]["code"] == "incomplete_body"
    offset = int(tus.head(url).headers["Upload-Offset"])
    assert offset == 2500
    assert tus.patch(url, offset, data[offset:]).status_code == 204


def test_a_patch_cut_off_with_a_checksum_keeps_nothing(tus, call_log):
    data = wav(0.5)
    url = tus.new(call_log.id, len(data))
    headers = {"Upload-Checksum": checksum("sha1", data)}
    response = cut_patch(tus, url, 0, data[:2500], announced=len(data), headers=headers)
    assert response.status_code == 400
    assert tus.head(url).headers["Upload-Offset"] == "0"
