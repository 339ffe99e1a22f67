"""Real tus clients upload recordings through gunicorn into S3 (moto's server, then Ceph RGW), and a real
`dramatiq edcrm.actors` worker makes the Recording: tus-js-client (Node, tests/clients/tus_upload.mjs)
and tuspy (Python), plain, cut mid-PATCH and resumed, with per-PATCH checksums, with deferred length
(also ending on a chunk boundary: the length comes in an empty PATCH), with parallelUploads
(concatenation), terminated; and two web servers that share nothing local, behind a round-robin proxy,
taking alternate PATCHes of one upload. Every Recording's SHA-256 is the source's, and so are the
bytes downloaded back; an announced SHA-256 that is wrong fails the upload with the reason.

Checksums: tuspy sends `Upload-Checksum` (sha1) with `upload_checksum=True`; tus-js-client has no such
option, so tus_upload.mjs sets the header itself in onBeforeRequest (`--checksum`); a PATCH with a wrong
checksum is sent with requests.

Uploads are 5 MiB parts (TUS_PART_BYTES' least) and 10-16 MiB files: whole parts, a tail joined into
the next PATCH's part, and the last part promoted from the tail, without a heavy run.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import json
import os
import subprocess
from pathlib import Path

import pytest
import requests
from tusclient import client as tus_client
from tusclient.storage.filestorage import FileStorage

from edcrm.models.recording import UploadReason
from tests.support.processes import Service, free_port, wait_for
from tests.support.round_robin_proxy import RoundRobinProxy
from tests.support.stack import Stack, running_stack
from tests.support.tus_clients import (
    CLIENTS,
    MIB,
    PART,
    SETTINGS,
    TUS,
    assert_recorded,
    finished,
    no_leftovers,
    recording,
    require_node_clients,
    sha256,
    tus_headers,
    upload_id_of,
)


@pytest.fixture(scope="session")
def node_clients() -> Path:
    return require_node_clients()


@pytest.fixture(scope="module")
def tus_stack(postgres_url, redis_url, s3_endpoint, tmp_path_factory):
    """gunicorn and a worker on fresh databases and a fresh bucket of moto's S3 server, then of RGW."""
    folder = tmp_path_factory.mktemp(f"tus-{s3_endpoint.name}")
    with running_stack(postgres_url, redis_url, s3_endpoint, folder, settings=SETTINGS) as stack:
        yield stack


# -- helpers ------------------------------------------------------------------------------------------------


def tus_js(stack: Stack, path: Path, *options: str, endpoint: str | None = None, check: bool = True) -> dict:
    """tus_upload.mjs with the telecaller's token and the options; its JSON result."""
    argv = [
        "node",
        str(CLIENTS / "tus_upload.mjs"),
        "--endpoint",
        endpoint or f"{stack.base}{TUS}",
        "--file",
        str(path),
        "--token",
        stack.token,
        *options,
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=CLIENTS)
    lines = done.stdout.strip().splitlines()
    assert lines, f"tus_upload.mjs printed nothing (exit {done.returncode}): {done.stderr[-3000:]}"
    result = json.loads(lines[-1])
    if check:
        assert done.returncode == 0 and result["ok"], f"{result}\n{done.stderr[-3000:]}"
    return result


def metadata(call_log_id: int, data: bytes, **extra: str) -> list[str]:
    """tus_upload.mjs's options for the metadata of a recording of call_log_id."""
    announced = extra.get("sha256", sha256(data))
    return ["--call-log-id", str(call_log_id), "--filetype", "audio/wav", "--sha256", announced]


# -- tus-js-client -------------------------------------------------------------------------------------------


def test_tus_js_client_uploads_a_recording_in_patches(tus_stack, node_clients, tmp_path):
    call_log_id = tus_stack.new_call_log()
    data = recording(tmp_path / "call.wav", 13 * MIB + 77)  # 4 MiB PATCHes: tails joined into parts

    result = tus_js(
        tus_stack, tmp_path / "call.wav", *metadata(call_log_id, data), "--chunk-size", str(4 * MIB)
    )

    patches = [entry for entry in result["requests"] if entry["method"] == "PATCH"]
    assert [entry["offset"] for entry in patches] == [4 * MIB, 8 * MIB, 12 * MIB, len(data)]
    upload_id = upload_id_of(result["url"])
    assert_recorded(tus_stack, call_log_id, upload_id, data)
    no_leftovers(tus_stack, upload_id)


def test_tus_js_client_resumes_after_the_connection_is_cut_mid_patch(tus_stack, node_clients, tmp_path):
    call_log_id = tus_stack.new_call_log()
    data = recording(tmp_path / "call.wav", 16 * MIB + 5, seed=2)

    # One PATCH for the whole file, cut once 7 MiB went out; a new Upload finds the URL and resumes.
    result = tus_js(
        tus_stack, tmp_path / "call.wav", *metadata(call_log_id, data), "--stop-after", str(7 * MIB)
    )

    assert result["resumed_with"] == "findPreviousUploads" and result["url"] == result["first_url"]
    # What arrived before the cut was kept (no checksum: whole parts committed, the rest a tail).
    assert 0 < result["resumed_from"] < len(data), result
    assert_recorded(tus_stack, call_log_id, upload_id_of(result["url"]), data)


def test_tus_js_client_with_a_checksum_on_every_patch(tus_stack, node_clients, tmp_path):
    call_log_id = tus_stack.new_call_log()
    data = recording(tmp_path / "call.wav", 11 * MIB + 3, seed=3)

    result = tus_js(
        tus_stack,
        tmp_path / "call.wav",
        *metadata(call_log_id, data),
        "--chunk-size",
        str(3 * MIB),
        "--checksum",
        "sha256",
    )

    assert [entry["status"] for entry in result["requests"]] == [201, 204, 204, 204, 204]
    assert_recorded(tus_stack, call_log_id, upload_id_of(result["url"]), data)


@pytest.mark.parametrize("size", [10 * MIB, 11 * MIB + 7], ids=["on-a-chunk-boundary", "mid-chunk"])
def test_tus_js_client_with_deferred_length(tus_stack, node_clients, tmp_path, size):
    call_log_id = tus_stack.new_call_log()
    data = recording(tmp_path / "call.wav", size, seed=4)

    # A source of unknown size: the length comes with the last PATCH, or (ending on a chunk boundary)
    # in a PATCH with an empty body, where tusd would truncate the upload (tus/tusd#396).
    result = tus_js(
        tus_stack,
        tmp_path / "call.wav",
        *metadata(call_log_id, data),
        "--stream",
        "--deferred",
        "--chunk-size",
        str(5 * MIB),
    )

    offsets = [entry["offset"] for entry in result["requests"] if entry["method"] == "PATCH"]
    assert offsets == ([5 * MIB, size, size] if size == 10 * MIB else [5 * MIB, 10 * MIB, size])
    status = finished(tus_stack, upload_id_of(result["url"]))
    assert status["length"] == size
    assert_recorded(tus_stack, call_log_id, upload_id_of(result["url"]), data)


def test_tus_js_client_parallel_uploads_concatenate_into_one_recording(tus_stack, node_clients, tmp_path):
    call_log_id = tus_stack.new_call_log()
    data = recording(tmp_path / "call.wav", 12 * MIB + 11, seed=5)

    result = tus_js(tus_stack, tmp_path / "call.wav", *metadata(call_log_id, data), "--parallel", "2")

    creations = [entry for entry in result["requests"] if entry["method"] == "POST"]
    assert len(creations) == 3  # two partial uploads, then the final one
    assert_recorded(tus_stack, call_log_id, upload_id_of(result["url"]), data)


def test_tus_js_client_terminates_an_upload(tus_stack, node_clients, tmp_path):
    call_log_id = tus_stack.new_call_log()
    data = recording(tmp_path / "call.wav", 14 * MIB, seed=6)

    result = tus_js(
        tus_stack,
        tmp_path / "call.wav",
        *metadata(call_log_id, data),
        "--chunk-size",
        str(PART),
        "--terminate-after",
        str(6 * MIB),
    )

    assert result["terminated"] and result["requests"][-1] == {**result["requests"][-1], "status": 204}
    upload_id = upload_id_of(result["url"])
    head = requests.head(result["url"], headers=tus_headers(tus_stack), timeout=30)
    assert head.status_code in (404, 410)
    assert stack_status(tus_stack, upload_id) in {"cancelled", None}
    assert tus_stack.api(f"/api/call-logs/{call_log_id}").json()["recording"] is None
    no_leftovers(tus_stack, upload_id)


def stack_status(stack: Stack, upload_id: str) -> str | None:
    answer = stack.api(f"/api/recordings/uploads/{upload_id}")
    return answer.json()["status"] if answer.status_code == 200 else None


def test_a_wrong_announced_sha256_fails_the_upload_with_the_reason(tus_stack, node_clients, tmp_path):
    call_log_id = tus_stack.new_call_log()
    data = recording(tmp_path / "call.wav", 6 * MIB, seed=7)

    result = tus_js(tus_stack, tmp_path / "call.wav", *metadata(call_log_id, data, sha256="0" * 64))

    status = finished(tus_stack, upload_id_of(result["url"]))
    assert status["status"] == "failed", status
    assert status["error"] == UploadReason.UNUSABLE  # "… not the file the app announced (size or checksum)."
    assert tus_stack.api(f"/api/call-logs/{call_log_id}").json()["recording"] is None


# -- tuspy -----------------------------------------------------------------------------------------------


class StaysOpen:
    """A file that tuspy may close as often as it likes (it closes the stream it is given after every
    fingerprint, and never closes the files it opens itself): the test closes it."""

    def __init__(self, stream):
        self._stream = stream

    def __getattr__(self, name: str):
        return getattr(self._stream, name)

    def __enter__(self) -> StaysOpen:
        return self

    def __exit__(self, *exc_info) -> None:
        return None

    def close(self) -> None:
        return None


@contextlib.contextmanager
def tuspy_uploader(stack: Stack, path: Path, call_log_id: int, data: bytes, **options):
    """A tuspy Uploader of the file at path for call_log_id, from a stream that this closes."""
    client = tus_client.TusClient(f"{stack.base}{TUS}", headers={"Authorization": f"Bearer {stack.token}"})
    meta = {
        "call_log_id": str(call_log_id),
        "filename": path.name,
        "filetype": "audio/wav",
        "sha256": sha256(data),
    }
    with open(path, "rb") as stream:
        yield client.uploader(file_stream=StaysOpen(stream), metadata=meta, **options)


@pytest.mark.parametrize("checksum", [False, True], ids=["plain", "sha1-checksums"])
def test_tuspy_uploads_a_recording(tus_stack, tmp_path, checksum):
    call_log_id = tus_stack.new_call_log()
    data = recording(tmp_path / "call.wav", 12 * MIB + 1, seed=8)

    with tuspy_uploader(
        tus_stack, tmp_path / "call.wav", call_log_id, data, chunk_size=4 * MIB, upload_checksum=checksum
    ) as uploader:
        uploader.upload()

    assert uploader.offset == len(data)
    assert_recorded(tus_stack, call_log_id, upload_id_of(uploader.url), data)


def test_tuspy_resumes_from_its_stored_url(tus_stack, tmp_path, request):
    call_log_id = tus_stack.new_call_log()
    data = recording(tmp_path / "call.wav", 11 * MIB + 9, seed=9)
    storage = FileStorage(str(tmp_path / "tuspy-urls.json"))
    request.addfinalizer(storage.close)
    resumable = {"chunk_size": 3 * MIB, "store_url": True, "url_storage": storage}

    with tuspy_uploader(tus_stack, tmp_path / "call.wav", call_log_id, data, **resumable) as first:
        first.upload(stop_at=6 * MIB)  # the app is closed after two PATCHes
    assert first.offset == 6 * MIB

    # Started again: the URL from its storage, the offset from a HEAD.
    with tuspy_uploader(tus_stack, tmp_path / "call.wav", call_log_id, data, **resumable) as again:
        assert again.url == first.url and again.offset == 6 * MIB
        again.upload()
    assert_recorded(tus_stack, call_log_id, upload_id_of(again.url), data)


def test_a_patch_whose_checksum_does_not_match_is_460_and_keeps_nothing(tus_stack, tmp_path):
    call_log_id = tus_stack.new_call_log()
    data = recording(tmp_path / "call.wav", 6 * MIB + 1, seed=10)
    with tuspy_uploader(tus_stack, tmp_path / "call.wav", call_log_id, data) as uploader:
        url = uploader.create_url()
    headers = {**tus_headers(tus_stack), "Content-Type": "application/offset+octet-stream"}

    for algorithm in ("sha1", "md5", "sha256"):
        wrong = base64.b64encode(hashlib.new(algorithm, b"other bytes").digest()).decode()
        checksum = {"Upload-Offset": "0", "Upload-Checksum": f"{algorithm} {wrong}"}
        refused = requests.patch(url, data=data, headers={**headers, **checksum}, timeout=60)
        assert refused.status_code == 460, refused.text
        head = requests.head(url, headers=tus_headers(tus_stack), timeout=30)
        assert head.headers["Upload-Offset"] == "0"

    right = base64.b64encode(hashlib.md5(data).digest()).decode()
    checksum = {"Upload-Offset": "0", "Upload-Checksum": f"md5 {right}"}
    sent = requests.patch(url, data=data, headers={**headers, **checksum}, timeout=60)
    assert sent.status_code == 204 and sent.headers["Upload-Offset"] == str(len(data))
    assert_recorded(tus_stack, call_log_id, upload_id_of(url), data)


# -- two webs, one upload ------------------------------------------------------------------------------------


@pytest.fixture
def two_webs(postgres_url, redis_url, s3_endpoint, tmp_path):
    """Two gunicorns (each in a working folder, instance folder and TMPDIR of its own) on one PostgreSQL,
    Redis and bucket, behind a proxy that sends each request to the next one."""
    with (
        running_stack(
            postgres_url, redis_url, s3_endpoint, tmp_path / "stack", webs=2, settings=SETTINGS
        ) as stack,
        RoundRobinProxy(stack.bases) as proxy,
    ):
        yield stack, proxy


def test_two_webs_take_alternate_patches_of_one_upload(two_webs, node_clients, tmp_path):
    stack, proxy = two_webs
    call_log_id = stack.call_log_id
    data = recording(tmp_path / "call.wav", 16 * MIB + 13, seed=11)

    result = tus_js(
        stack,
        tmp_path / "call.wav",
        *metadata(call_log_id, data),
        "--chunk-size",
        str(3 * MIB),
        endpoint=f"{proxy.url}{TUS}",
    )

    patched = proxy.backends_of("PATCH")
    assert len(patched) == 6 and set(patched) == {0, 1}
    assert all(this != after for this, after in itertools.pairwise(patched))  # alternately
    assert result["url"].startswith(proxy.url)
    assert_recorded(stack, call_log_id, upload_id_of(result["url"]), data)


# -- the reference server: the clients here are right -------------------------------------------------


@pytest.fixture(scope="module")
def reference_server(s3_endpoint, node_clients, tmp_path_factory):
    """The official @tus/server + @tus/s3-store (tests/clients/reference_server.mjs) on a fresh bucket of
    moto's S3 server, then of RGW: (its tus endpoint, the bucket)."""
    bucket = s3_endpoint.create_bucket()
    port = free_port()
    argv = ["node", str(CLIENTS / "reference_server.mjs"), "--port", str(port), "--s3-endpoint"]
    argv += [s3_endpoint.endpoint_url, "--bucket", bucket, "--part-size", str(PART)]
    env = {**os.environ, **s3_endpoint.aws_env}
    log = tmp_path_factory.mktemp("reference") / "reference_server.log"
    with Service(argv, env=env, log_path=log, name="@tus/server") as server:
        wait_for(lambda: '"ready":true' in server.output(), timeout=60, what="@tus/server", watch=server)
        yield f"http://127.0.0.1:{port}/files/", bucket
    if hasattr(s3_endpoint, "delete_bucket"):
        s3_endpoint.delete_bucket(bucket)


@pytest.mark.parametrize(
    "options",
    [
        ["--chunk-size", str(4 * MIB)],
        ["--stop-after", str(6 * MIB)],
        ["--stream", "--deferred", "--chunk-size", str(PART)],
    ],
    ids=["patches", "cut-and-resumed", "deferred-on-a-chunk-boundary"],
)
def test_the_clients_upload_byte_identical_files_to_the_reference_server(
    reference_server, s3_endpoint, tmp_path, options
):
    endpoint, bucket = reference_server
    data = recording(tmp_path / "call.wav", 10 * MIB, seed=30)

    argv = [
        "node",
        str(CLIENTS / "tus_upload.mjs"),
        "--endpoint",
        endpoint,
        "--file",
        str(tmp_path / "call.wav"),
    ]
    done = subprocess.run([*argv, *options], capture_output=True, text=True, timeout=300, cwd=CLIENTS)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["ok"], result

    stored = s3_endpoint.client().get_object(Bucket=bucket, Key=upload_id_of(result["url"]))["Body"].read()
    assert sha256(stored) == sha256(data)
