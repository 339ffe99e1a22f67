"""Benchmark: tus uploads by tus-js-client into edcrm and into the reference tus server, on one S3 server.

    .venv/bin/python bench/tus.py [--s3 moto|rgw] [--size-mb 1024] [--small-mb 64]   (or `make bench-tus`)

Needs PostgreSQL, Redis (Redis DB 15, or BENCH_REDIS_URL, is flushed), Node.js and the test clients
(`npm ci --prefix tests/clients`: tus-js-client, @tus/server, @tus/s3-store). One run is on one S3 server:
moto's (`moto_server`, a process of its own, over HTTP), or Ceph RGW (`--s3 rgw`: a one-node RGW of
tests/support/rgw.py in a folder of its own, EDCRM_BENCH_RGW_DIR or /tmp/edcrm-bench-rgw), or any S3
server already running at `--endpoint` (keys in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY). The node
side is tests/clients/tus_upload.mjs (tus-js-client) and tests/clients/reference_server.mjs. In that
run, with the same bytes (a WAV header, then pseudo-random data) from a local file, one after the other:

1. the S3 server's own CompleteMultipartUpload: boto3 makes a multipart upload of the file in parts of
   --part-mb, then only the complete call is timed (at --size-mb and at --small-mb);
2. boto3's `upload_file` of the file, in a plain Python process of its own (the faster of two runs);
3. the reference tus server, `@tus/server` + `@tus/s3-store` (node, parts of --part-mb), and tus-js-client
   (node, PATCHes of --part-mb): ingest, from the first PATCH sent to the last one answered;
4. edcrm: gunicorn (`gunicorn -c gunicorn.conf.py app:app`, --web-concurrency processes) and the
   Procfile's recordings worker (`dramatiq edcrm.actors --queues recordings`) on a fresh PostgreSQL
   database, the same client: ingest as for 3; then from the last PATCH answered to the upload
   `completed` in the database (the Recording committed, polled every 5 ms); end to end, first PATCH
   sent to Recording committed, against `upload_file`; at --small-mb and at --size-mb, after an untimed
   2 MiB warm-up upload (the worker's first job makes its S3 client);
5. edcrm's chunk API in chunks of --part-mb (each PUT with its X-Chunk-SHA256): finalize, from the
   `complete` call to the upload `completed`, against the S3 server's own complete of the same parts;
6. the peak RSS (VmHWM) of every process of gunicorn and of the recordings worker after all of it.

It prints the figures side by side with their targets (issue 13); no figure fails the run: the exit
status is 0 when every measurement could be made.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path

import boto3
import redis
import requests
import sqlalchemy as sa

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edcrm.storage.s3 import client_config  # noqa: E402
from tests.support import processes as helpers  # noqa: E402

SERVER_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
NODE = os.environ.get("NODE", "node")
CLIENTS = REPO / "tests" / "clients"
MIB = 1024 * 1024
MB = 1_000_000
#: moto checks no credentials, but the SDKs refuse to sign without some.
MOTO_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
REGION = {"AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
POLL_S = 0.005

#: The targets of issue 13, item 7.
TARGET_BEYOND_COMPLETE_S = 1.0  # last byte -> Recording, beyond the server's own complete of the same parts
TARGET_SMALL_S = 1.5  # last byte -> Recording at --small-mb (64 MiB)
TARGET_RGW_COMMIT_S = 1.0  # on RGW: last byte -> Recording at 1 GiB
TARGET_END_TO_END = {"moto": 1.2, "rgw": 2.0}  # first byte -> Recording / upload_file
TARGET_RSS_MB = 100


@dataclass
class S3:
    """An S3 server: its endpoint and the credentials the processes get in their environment."""

    kind: str
    endpoint: str
    credentials: dict[str, str]

    @property
    def env(self) -> dict[str, str]:
        return {**self.credentials, **REGION}

    def client(self):
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            config=client_config(),
            aws_access_key_id=self.credentials["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.credentials["AWS_SECRET_ACCESS_KEY"],
            region_name="us-east-1",
        )


@dataclass
class Figures:
    """What one run measured, in seconds unless named otherwise."""

    s3: str
    size: int
    small: int
    part: int
    complete: dict[int, float] = field(default_factory=dict)  # size -> the server's own complete
    complete_after: dict[int, float] = field(default_factory=dict)  # the same, timed after edcrm's

    def server_complete(self, size: int) -> float | None:
        """The server's own complete at `size`: the mean of the times before and after edcrm's runs (its
        time moves with the machine's load, and moto's with its memory)."""
        times = [t[size] for t in (self.complete, self.complete_after) if size in t]
        return statistics.mean(times) if times else None

    upload_file: float | None = None
    reference_ingest: float | None = None  # first PATCH sent -> last answered
    reference_patches: list[float] = field(default_factory=list)  # each PATCH's round trip
    edcrm_patches: list[float] = field(default_factory=list)  # at --size-mb
    reference_rss: float | None = None
    edcrm_ingest: dict[int, float] = field(default_factory=dict)
    edcrm_commit: dict[int, float] = field(default_factory=dict)  # last PATCH answered -> Recording
    edcrm_end_to_end: dict[int, float] = field(default_factory=dict)  # first PATCH sent -> Recording
    chunk_ingest: float | None = None
    chunk_finalize: float | None = None  # complete call -> Recording
    rss: list[tuple[str, int, float, float]] = field(default_factory=list)  # role, pid, peak, idle
    notes: list[str] = field(default_factory=list)
    phases: dict[tuple[str, int], str] = field(default_factory=dict)  # the job's times, for a figure
    failures: list[str] = field(default_factory=list)  # measurements that could not be made, and why


# -- the bytes ----------------------------------------------------------------------------------------


def write_recording(path: Path, size: int, seed: int = 7) -> str:
    """A WAV file of `size` bytes at path (its header announces them all, then pseudo-random data, one
    random block shifted per block so no two blocks are alike); its SHA-256, hex."""
    rng = random.Random(seed)
    header = (
        b"RIFF"
        + struct.pack("<I", size - 8)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, 8000, 16000, 2, 16)
        + b"data"
        + struct.pack("<I", size - 44)
    )
    block = rng.randbytes(MIB)
    digest = hashlib.sha256()
    with open(path, "wb") as out:
        written = 0
        for index in range(-(-size // MIB)):
            data = (header if index == 0 else b"") + block[index % 997 :] + block[: index % 997]
            data = data[: min(MIB, size - written)]
            out.write(data)
            digest.update(data)
            written += len(data)
    return digest.hexdigest()


def read_part(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as source:
        source.seek(offset)
        return source.read(length)


# -- the S3 server ------------------------------------------------------------------------------------


@contextlib.contextmanager
def s3_server(kind: str, endpoint: str | None, logs: Path) -> Iterator[S3]:
    """The S3 server of this run: one started for it, or the one at endpoint."""
    if endpoint:
        credentials = {name: os.environ.get(name, "bench") for name in MOTO_CREDENTIALS}
        yield S3(kind, endpoint, credentials)
    elif kind == "moto":
        port = helpers.free_port()
        moto = helpers.Service(
            [str(helpers.BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            env=helpers.service_env(**MOTO_CREDENTIALS, **REGION),
            log_path=logs / "moto.log",
            name="moto_server",
        )
        with moto:
            server = S3("moto", f"http://127.0.0.1:{port}", dict(MOTO_CREDENTIALS))
            helpers.wait_for(lambda: _answers(server.endpoint), timeout=30, what="moto", watch=moto)
            yield server
    else:
        # The tests' one-node RGW, in a folder of the benchmark's own (not the tests' cluster, whose load
        # would weigh on the figures), stopped at the end when this run started it.
        from tests.support import rgw

        base = Path(os.environ.get("EDCRM_BENCH_RGW_DIR", "/tmp/edcrm-bench-rgw"))
        try:
            gateway, started = rgw.ensure_rgw(base)
        except rgw.RgwUnavailable as exc:
            raise SystemExit(f"no Ceph RGW: {exc}") from None
        try:
            credentials = {
                "AWS_ACCESS_KEY_ID": gateway.access_key,
                "AWS_SECRET_ACCESS_KEY": gateway.secret_key,
            }
            yield S3("rgw", gateway.endpoint_url, credentials)
        finally:
            if started:
                rgw.stop(base)


def empty_bucket(s3, bucket: str) -> None:
    """Every object and unfinished multipart upload of bucket deleted (RGW and moto keep them in memory)."""
    for page in s3.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
        for upload in page.get("Uploads", []):
            s3.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})


def complete_seconds(s3, bucket: str, path: Path, size: int, part: int) -> float:
    """The server's own CompleteMultipartUpload of `size` bytes of path in parts of `part` bytes: the
    parts go up first (4 at a time), and only the complete call is timed."""
    key = f"complete-{size}"
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]

    def put(number: int) -> dict:
        offset = (number - 1) * part
        body = read_part(path, offset, min(part, size - offset))
        etag = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body)[
            "ETag"
        ]
        return {"PartNumber": number, "ETag": etag}

    with ThreadPoolExecutor(4) as pool:
        parts = list(pool.map(put, range(1, -(-size // part) + 1)))
    started = time.perf_counter()
    s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts})
    seconds = time.perf_counter() - started
    s3.delete_object(Bucket=bucket, Key=key)
    return seconds


#: boto3's upload_file in a plain Python process of its own (no edcrm imported, nothing of the benchmark's
#: process shared), with the client settings edcrm uses and boto3's default transfer settings; prints
#: the seconds it took.
UPLOAD_FILE = """
import sys, time, boto3
from botocore.config import Config
path, endpoint, bucket = sys.argv[1:4]
config = Config(signature_version="s3v4", s3={"addressing_style": "path"},
                request_checksum_calculation="when_required", response_checksum_validation="when_required")
s3 = boto3.session.Session().client("s3", endpoint_url=endpoint, config=config)
started = time.perf_counter()
s3.upload_file(path, bucket, "recording.wav")
print(time.perf_counter() - started)
s3.delete_object(Bucket=bucket, Key="recording.wav")
"""


def upload_file_seconds(server: S3, bucket: str, path: Path, runs: int = 2) -> float:
    env = helpers.service_env(**server.env)
    argv = [sys.executable, "-c", UPLOAD_FILE, str(path), server.endpoint, bucket]
    return min(
        float(subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout)
        for _ in range(runs)
    )


# -- tus over node ------------------------------------------------------------------------------------


def tus_upload(endpoint: str, path: Path, part: int, *extra: str) -> dict:
    """tus-js-client (tests/clients/tus_upload.mjs, no retries) uploads path to endpoint in PATCHes of
    `part` bytes; its report, with `first_byte` (the first PATCH sent) and `last_ack` (the answer to the
    one that carried the last byte) in seconds since the epoch."""
    argv = [NODE, str(CLIENTS / "tus_upload.mjs"), "--endpoint", endpoint, "--file", str(path)]
    argv += ["--chunk-size", str(part), "--no-retry", *extra]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=3600)
    try:
        report = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        report = {"ok": False, "error": done.stderr.strip()[-2000:]}
    if not report.get("ok"):
        raise RuntimeError(
            f"tus-js-client failed: {report.get('status')} {report.get('error')} {report.get('body')}"
        )
    timings = report["timings"]
    report["first_byte"] = (timings["started_at"] + timings["first_patch"]) / 1000
    report["last_ack"] = (timings["started_at"] + timings["last_response"]) / 1000
    return report


def patch_times(report: dict) -> list[float]:
    """Each PATCH's round trip (s), from the client's log: one PATCH is sent as the last one is answered."""
    answered = [entry["at"] for entry in report["requests"] if entry["method"] == "PATCH"]
    starts = [report["timings"]["first_patch"], *answered[:-1]]
    return [(end - start) / 1000 for start, end in zip(starts, answered, strict=True)]


def upload_id_of(report: dict) -> str:
    """The upload's id: the last segment of its URL."""
    return report["url"].rstrip("/").rsplit("/", 1)[-1]


def reference_server(server: S3, bucket: str, part: int, logs: Path) -> tuple[helpers.Service, str]:
    """@tus/server + @tus/s3-store (tests/clients/reference_server.mjs) on server's bucket, in parts of
    `part` bytes: the service and its tus endpoint."""
    port = helpers.free_port()
    argv = [
        NODE,
        str(CLIENTS / "reference_server.mjs"),
        "--port",
        str(port),
        "--s3-endpoint",
        server.endpoint,
    ]
    argv += ["--bucket", bucket, "--part-size", str(part)]
    env = helpers.service_env(**server.env)
    service = helpers.Service(argv, env=env, log_path=logs / "tus-server.log", name="@tus/server")
    helpers.wait_for(
        lambda: '"ready":true' in service.output(), timeout=30, what="@tus/server", watch=service
    )
    return service, f"http://127.0.0.1:{port}/files/"


# -- edcrm --------------------------------------------------------------------------------------------


#: Call logs of the telecaller whose id is argv[1], argv[2] of them; prints their ids.
MAKE_CALL_LOGS = """
import sys
from edcrm import create_app
from edcrm.extensions import db
from edcrm.models import CallLog, CallOutcome, Lead, User
app = create_app()
with app.app_context():
    telecaller = db.session.get(User, int(sys.argv[1]))
    logs = []
    for n in range(int(sys.argv[2])):
        lead = Lead(branch_id=telecaller.branch_id, telecaller_id=telecaller.id, student_name=f"Bench {n}",
                    phone_number=f"+9198000{n:05d}")
        logs.append(CallLog(lead=lead, telecaller_id=telecaller.id, outcome=CallOutcome.CONNECTED))
    db.session.add_all(logs)
    db.session.commit()
    print(" ".join(str(log.id) for log in logs))
"""


def start_recordings_worker(env: dict[str, str], log_path: Path) -> helpers.Service:
    """The Procfile's `worker_recordings`, exactly as a Procfile runner starts it (by a shell, with the
    virtualenv's scripts first on PATH)."""
    line = next(
        line for line in (REPO / "Procfile").read_text().splitlines() if line.startswith("worker_recordings:")
    )
    env = {**env, "PATH": f"{helpers.BIN}{os.pathsep}{env.get('PATH', '')}"}
    argv = ["/bin/sh", "-c", "exec " + line.split(":", 1)[1].strip()]
    return helpers.Service(argv, env=env, log_path=log_path, name="worker_recordings")


def wait_committed(engine: sa.Engine, upload_id: str, watch: helpers.Service, timeout: float = 600) -> float:
    """When (seconds since the epoch) the upload was seen `completed` in the database; fails if it ended
    otherwise."""
    query = sa.text("SELECT status, error FROM recording_uploads WHERE id = :id")
    deadline = time.monotonic() + timeout
    with engine.connect() as conn:
        while True:
            row = conn.execute(query, {"id": upload_id}).first()
            conn.rollback()  # a fresh snapshot for the next look
            seen = time.time()
            if row is not None and row.status == "completed":
                return seen
            if row is not None and row.status in ("failed", "cancelled"):
                raise RuntimeError(f"upload {upload_id} ended {row.status}: {row.error}")
            if not watch.alive or time.monotonic() > deadline:
                raise RuntimeError(f"upload {upload_id} not completed (last: {row}): {watch.describe()}")
            time.sleep(POLL_S)


def job_phases(engine: sa.Engine, upload_id: str, since: float) -> str:
    """When the upload's job was enqueued, started and ended (the ledger's times), from `since`."""
    query = sa.text(
        "SELECT j.enqueued_at, j.started_at, j.finished_at FROM jobs j"
        " JOIN recording_uploads u ON u.job_id = j.id WHERE u.id = :id"
    )
    deadline = time.monotonic() + 10
    with engine.connect() as conn:
        while True:  # the ledger writes the end just after the actor's own commit
            row = conn.execute(query, {"id": upload_id}).first()
            conn.rollback()
            if row is None or row[2] is not None or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    if row is None:
        return "no job in the ledger"

    def at(moment) -> str:
        if moment is None:
            return "?"
        moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        return f"{moment.timestamp() - since:+.2f}"

    return f"job enqueued {at(row[0])}, started {at(row[1])}, ended {at(row[2])} s"


def run_edcrm(server: S3, args, figures: Figures, files: dict[int, tuple[Path, str]], logs: Path) -> None:
    """Every edcrm measurement: tus at each size, then the chunk API at --size-mb; then the peaks."""
    s3 = server.client()
    bucket = f"edcrm-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    with helpers.fresh_postgres_database(SERVER_URL) as database_url:
        port = helpers.free_port()
        env = helpers.service_env(
            DATABASE_URL=database_url,
            REDIS_URL=REDIS_URL,
            STORAGE_URL=f"s3://{bucket}/edcrm",
            S3_ENDPOINT_URL=server.endpoint,
            EDCRM_INSTANCE_PATH=logs / "instance",
            PORT=str(port),
            MAX_RECORDING_BYTES=str(max(files) + MIB),
            MAX_CHUNK_BYTES=str(args.part),
            TUS_PART_BYTES=str(args.part),
            WEB_CONCURRENCY=str(args.web_concurrency),
            **server.env,
        )
        helpers.run_flask("db", "upgrade", env=env)
        demo = json.loads(helpers.run_flask("edcrm", "seed-demo", "--json", env=env).stdout)
        telecaller = demo["telecallers"][0]
        argv = [sys.executable, "-c", MAKE_CALL_LOGS, str(telecaller["id"]), str(len(files) + 2)]
        made = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, check=True)
        call_logs = [int(n) for n in made.stdout.split()]
        engine = sa.create_engine(database_url)
        try:
            with (
                helpers.start_gunicorn(env, logs / "gunicorn.log") as web,
                start_recordings_worker(env, logs / "dramatiq.log") as worker,
            ):
                base = f"http://127.0.0.1:{port}"
                helpers.wait_for(
                    lambda: helpers.http_get(f"{base}/healthz"), timeout=60, what="gunicorn", watch=web
                )
                time.sleep(2)  # the worker's processes up too
                idle = {**web.memory_mb("VmRSS"), **worker.memory_mb("VmRSS")}
                auth = {"Authorization": f"Bearer {telecaller['token']}"}
                tus_endpoint = f"{base}/api/recordings/tus/"
                offered = requests.options(tus_endpoint, timeout=10)
                if "Tus-Version" not in offered.headers:
                    figures.notes.append(
                        f"edcrm tus: not measured, OPTIONS {tus_endpoint} answered {offered.status_code} "
                        "without Tus-Version (no tus endpoint in this checkout)"
                    )
                else:
                    # A warm-up first, untimed: a worker that has run a job before (its S3 client made,
                    # its finish code imported), as in production after the first upload of the day.
                    warmup = logs / "warmup.wav"
                    write_recording(warmup, 2 * MIB)
                    token = ["--token", telecaller["token"]]
                    try:
                        report = tus_upload(
                            tus_endpoint, warmup, args.part, *token, "--call-log-id", str(call_logs.pop())
                        )
                        wait_committed(engine, upload_id_of(report), worker)
                    except RuntimeError as exc:
                        figures.failures.append(f"edcrm tus warm-up: {exc}")
                    for size in sorted(files):
                        path, digest = files[size]
                        metadata = [*token, "--call-log-id", str(call_logs.pop())]
                        metadata += ["--filename", "bench.wav", "--filetype", "audio/wav", "--sha256", digest]
                        try:
                            report = tus_upload(tus_endpoint, path, args.part, *metadata)
                            upload_id = upload_id_of(report)
                            committed = wait_committed(engine, upload_id, worker)
                        except RuntimeError as exc:
                            figures.failures.append(f"edcrm tus {size // MIB} MiB: {exc}")
                            continue
                        figures.edcrm_ingest[size] = report["last_ack"] - report["first_byte"]
                        if size == figures.size:
                            figures.edcrm_patches = patch_times(report)
                        figures.edcrm_commit[size] = committed - report["last_ack"]
                        figures.edcrm_end_to_end[size] = committed - report["first_byte"]
                        figures.phases[("tus", size)] = job_phases(engine, upload_id, report["last_ack"])
                if not args.skip_chunks:
                    path, digest = files[figures.size]
                    try:
                        chunk_api(base, auth, call_logs.pop(), path, digest, figures, engine, worker)
                    except (RuntimeError, requests.RequestException) as exc:
                        figures.failures.append(f"edcrm chunk API: {exc}")
                for role, service in (("gunicorn", web), ("dramatiq", worker)):
                    for pid, peak in sorted(service.memory_mb().items()):
                        kind = "master" if pid == service.process.pid else "child"
                        figures.rss.append((f"{role} {kind}", pid, peak, idle.get(pid, 0.0)))
        finally:
            engine.dispose()
            empty_bucket(s3, bucket)
            s3.delete_bucket(Bucket=bucket)


def chunk_api(base, auth, call_log_id, path: Path, digest: str, figures: Figures, engine, worker) -> None:
    """The chunk API: the file in chunks of --part-mb, one after the other, then complete -> Recording."""
    size, part = figures.size, figures.part
    http = requests.Session()
    http.headers.update(auth)
    body = {
        "call_log_id": call_log_id,
        "filename": "bench.wav",
        "expected_chunks": -(-size // part),
        "total_size": size,
        "sha256": digest,
    }
    created = http.post(f"{base}/api/recordings/uploads", json=body, timeout=30)
    created.raise_for_status()
    upload_id = created.json()["upload_id"]
    started = time.perf_counter()
    for index in range(-(-size // part)):
        data = read_part(path, index * part, part)
        headers = {
            "X-Chunk-SHA256": hashlib.sha256(data).hexdigest(),
            "Content-Type": "application/octet-stream",
        }
        sent = http.put(
            f"{base}/api/recordings/uploads/{upload_id}/chunks/{index}",
            data=data,
            headers=headers,
            timeout=120,
        )
        if sent.status_code != 200:
            raise RuntimeError(f"chunk {index}: {sent.status_code} {sent.text}")
    figures.chunk_ingest = time.perf_counter() - started
    started_at = time.time()
    completed = http.post(f"{base}/api/recordings/uploads/{upload_id}/complete", timeout=30)
    if completed.status_code != 202:
        raise RuntimeError(f"complete: {completed.status_code} {completed.text}")
    figures.chunk_finalize = wait_committed(engine, upload_id, worker) - started_at
    figures.phases[("chunks", size)] = job_phases(engine, upload_id, started_at)


# -- the run ------------------------------------------------------------------------------------------


def measure(args) -> Figures:
    size, small, part = args.size_mb * MIB, args.small_mb * MIB, args.part
    figures = Figures(s3=args.s3, size=size, small=small if 0 < small < size else 0, part=part)
    logs = Path(tempfile.mkdtemp(prefix="edcrm-bench-tus-"))
    try:
        files: dict[int, tuple[Path, str]] = {}
        for n in {size, figures.small} - {0}:
            path = logs / f"recording-{n // MIB}.wav"
            files[n] = (path, write_recording(path, n))
        redis.Redis.from_url(REDIS_URL).flushdb()
        with s3_server(args.s3, args.endpoint, logs) as server:
            s3 = server.client()
            scratch = f"bench-{uuid.uuid4().hex[:8]}"
            s3.create_bucket(Bucket=scratch)
            try:
                for n, (path, _) in sorted(files.items()):
                    figures.complete[n] = complete_seconds(s3, scratch, path, n, part)
                figures.upload_file = upload_file_seconds(server, scratch, files[size][0])
                service, endpoint = reference_server(server, scratch, part, logs)
                with service:
                    report = tus_upload(endpoint, files[size][0], part, "--filename", "bench.wav")
                    figures.reference_ingest = report["last_ack"] - report["first_byte"]
                    figures.reference_patches = patch_times(report)
                    # The reference stored the whole file (its key is the upload's id).
                    key = upload_id_of(report)
                    stored = s3.head_object(Bucket=scratch, Key=key)["ContentLength"]
                    if stored != size:
                        raise RuntimeError(f"@tus/server stored {stored} bytes of {size}")
                    figures.reference_rss = max(service.memory_mb().values(), default=None)
                empty_bucket(s3, scratch)
                if not args.skip_edcrm:
                    run_edcrm(server, args, figures, files, logs)
                    for n, (path, _) in sorted(files.items()):
                        figures.complete_after[n] = complete_seconds(s3, scratch, path, n, part)
            finally:
                empty_bucket(s3, scratch)
                s3.delete_bucket(Bucket=scratch)
    finally:
        if args.keep_logs:
            print(f"logs: {logs}", file=sys.stderr)
        else:
            shutil.rmtree(logs, ignore_errors=True)
    return figures


def within(value: float | None, limit: float | None, *, strict: bool = False) -> bool | None:
    """Whether value is at most (under, if strict) limit; None when either is unknown."""
    if value is None or limit is None:
        return None
    return value < limit if strict else value <= limit


def report(figures: Figures) -> str:
    """The figures side by side with their targets, as a table."""
    rows: list[tuple[str, str, str, str]] = []  # figure, edcrm, reference, target and verdict

    def mark(ok: bool | None, target: str) -> str:
        return f"{'PASS' if ok else 'FAIL'}  {target}" if ok is not None else f"--    {target}"

    def s(value: float | None) -> str:
        return f"{value:.2f} s" if value is not None else "n/a"

    def rate(size: int, seconds: float | None) -> str:
        return f"{size / MB / seconds:.1f} MB/s" if seconds else "n/a"

    def mib(n: int) -> str:
        return f"{n // MIB} MiB"

    size = figures.size
    ingest = figures.edcrm_ingest.get(size)
    ok = ingest <= figures.reference_ingest if ingest and figures.reference_ingest else None
    rows.append(
        (
            f"tus ingest {mib(size)} (first PATCH -> last answered)",
            rate(size, ingest),
            rate(size, figures.reference_ingest),
            mark(ok, ">= the reference's MB/s"),
        )
    )

    def spread(times: list[float]) -> str:
        return f"{statistics.median(times):.3f} · {max(times):.3f} s" if times else ""

    rows.append(
        (
            "  one PATCH's round trip, median · slowest",
            spread(figures.edcrm_patches),
            spread(figures.reference_patches),
            "",
        )
    )
    for n in sorted(figures.edcrm_commit) or sorted(figures.complete):
        commit, complete = figures.edcrm_commit.get(n), figures.server_complete(n)
        checks = [
            (complete + TARGET_BEYOND_COMPLETE_S if complete is not None else None, "<=", "complete + 1 s")
        ]
        if n == figures.small:
            checks.append((TARGET_SMALL_S, "<=", f"{TARGET_SMALL_S:g} s"))
        if figures.s3 == "rgw" and n == size:
            checks.append((TARGET_RGW_COMMIT_S, "<", f"{TARGET_RGW_COMMIT_S:g} s"))
        verdicts = [within(commit, limit, strict=op == "<") for limit, op, _ in checks]
        ok = None if None in verdicts else all(verdicts)
        target = ", ".join(f"{op} {text}" for _, op, text in checks)
        rows.append((f"tus {mib(n)}: last byte -> Recording committed", s(commit), "", mark(ok, target)))
        rows.append(
            (
                f"  S3's own CompleteMultipartUpload, {-(-n // figures.part)} parts (before · after)",
                "",
                " · ".join(s(t[n]) for t in (figures.complete, figures.complete_after) if n in t),
                "",
            )
        )
    end = figures.edcrm_end_to_end.get(size)
    limit = TARGET_END_TO_END[figures.s3]
    ratio = end / figures.upload_file if end and figures.upload_file else None
    rows.append((f"tus {mib(size)}: first byte -> Recording committed", s(end), "", ""))
    rows.append(("  boto3 upload_file, same bytes (own process, best of 2)", "", s(figures.upload_file), ""))
    rows.append(
        (
            "  end to end / upload_file",
            f"{ratio:.2f}" if ratio else "n/a",
            "",
            mark(ratio <= limit if ratio else None, f"<= {limit:g}"),
        )
    )
    if figures.chunk_finalize is not None or figures.chunk_ingest is not None:
        complete = figures.server_complete(size)
        fin = figures.chunk_finalize
        ok = fin <= complete + TARGET_BEYOND_COMPLETE_S if fin is not None and complete is not None else None
        rows.append(
            (
                f"chunk API {mib(size)}, {mib(figures.part)} chunks: ingest",
                rate(size, figures.chunk_ingest),
                "",
                "",
            )
        )
        rows.append(
            (
                "  finalize: complete call -> Recording committed",
                s(fin),
                s(complete),
                mark(ok, f"<= complete + {TARGET_BEYOND_COMPLETE_S:g} s"),
            )
        )
    for role, pid, peak, idle in figures.rss:
        rows.append(
            (
                f"peak RSS, {role} (pid {pid})",
                f"{peak:.1f} MB",
                f"idle {idle:.1f} MB",
                mark(peak <= TARGET_RSS_MB, f"<= {TARGET_RSS_MB} MB"),
            )
        )
    if figures.reference_rss is not None:
        rows.append(("peak RSS, @tus/server (node)", "", f"{figures.reference_rss:.1f} MB", ""))
    head = ("figure", "edcrm", "reference", "target")
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(4)]
    lines = [
        f"tus-js-client, {mib(figures.part)} PATCHes, on {figures.s3}; reference: @tus/server + "
        "@tus/s3-store (ingest), the S3 server's own complete, boto3 upload_file",
        "",
        "  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)),
        "  ".join("-" * w for w in widths),
    ]
    for row in rows:
        lines.append(
            "  ".join(
                [row[0].ljust(widths[0]), row[1].rjust(widths[1]), row[2].rjust(widths[2]), row[3]]
            ).rstrip()
        )
    for (what, n), phases in sorted(figures.phases.items()):
        since = "the last byte answered" if what == "tus" else "the complete call"
        lines.append(f"{what} {mib(n)}: {phases} after {since}")
    lines += [f"note: {note}" for note in figures.notes]
    lines += [f"FAILED: {failure}" for failure in figures.failures]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--s3", choices=("moto", "rgw"), default="moto", help="the S3 server (default moto)")
    parser.add_argument("--endpoint", help="an S3 server already running (credentials from AWS_* variables)")
    parser.add_argument("--size-mb", type=int, default=1024, help="the recording's size (default 1024 MiB)")
    parser.add_argument(
        "--small-mb", type=int, default=64, help="the second, smaller one (default 64; 0: none)"
    )
    parser.add_argument("--part-mb", type=int, default=8, help="PATCH, part and chunk size (default 8 MiB)")
    parser.add_argument("--web-concurrency", type=int, default=2, help="gunicorn processes (default 2)")
    parser.add_argument("--skip-edcrm", action="store_true", help="only the reference measurements")
    parser.add_argument("--skip-chunks", action="store_true", help="no chunk API measurement")
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs (path on stderr)")
    args = parser.parse_args()
    args.part = args.part_mb * MIB
    if not (CLIENTS / "node_modules" / "tus-js-client").is_dir():
        raise SystemExit("the node clients are missing: npm ci --prefix tests/clients")
    figures = measure(args)
    print()
    print(report(figures))
    return 1 if figures.failures else 0


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code < 500
    except requests.ConnectionError:
        return False


if __name__ == "__main__":
    sys.exit(main())
