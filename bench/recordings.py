"""Benchmark: a recording sent in chunks through the HTTP API and finalized into S3 (moto's server).

    .venv/bin/python bench/recordings.py [--size-mb 1024] [--chunk-mb 1]     (or `make bench-recordings`)

Needs PostgreSQL and Redis (Redis DB 10, or BENCH_REDIS_URL, is flushed). In one run it starts:
moto's S3 server (`moto_server`, a process of its own), a fresh PostgreSQL database migrated with
`flask db upgrade`, gunicorn (`gunicorn -c gunicorn.conf.py app:app`, the Procfile's web) and one
`dramatiq edcrm.actors` worker, all on loopback, with STORAGE_URL=s3://… on the moto server. Then:

1. ingest: a telecaller's session sends the recording (a WAV header, then pseudo-random bytes) in
   --chunk-mb chunks, one after the other as a phone would, each with its X-Chunk-SHA256;
2. finalize: `complete`, then the clock runs until the job is `succeeded` in the ledger (the actor
   reads the chunks back from S3 and stores the recording as a multipart upload);
3. baseline (before 2, with the same objects on the server): boto3's `upload_file` of the same bytes
   from a local file, to the same server, in a plain Python process of its own (the faster of two runs).

It prints the ingest MB/s, the finalize time next to upload_file's, and the peak RSS (VmHWM) of every
web and worker process. Targets: finalize at most 1.5 x upload_file; each process at most 100 MB.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import struct
import subprocess
import sys
import tempfile
import time
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
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/10")
MIB = 1024 * 1024
AWS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
TARGET_RATIO, TARGET_RSS_MB = 1.5, 100


def chunks(size: int, chunk: int, seed: int = 7):
    """The recording, chunk by chunk: a WAV header announcing `size` bytes, then pseudo-random data."""
    rng = random.Random(seed)
    header = (
        b"RIFF"
        + struct.pack("<I", size - 8)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, 8000, 16000, 2, 16)
    )
    header += b"data" + struct.pack("<I", size - 44)
    block = rng.randbytes(chunk)  # one random block, shifted per chunk: fast to make, never repeated
    sent = 0
    for index in range(-(-size // chunk)):
        data = (header if index == 0 else b"") + block[index % 997 :] + block[: index % 997]
        data = data[: min(chunk, size - sent)]
        sent += len(data)
        yield data


def start_recordings_worker(env: dict[str, str], log_path: Path) -> helpers.Service:
    """The Procfile's `worker_recordings`, exactly (the processes' environment is the Procfile's too: no
    malloc or other tuning that production would not get; edcrm sets its own, see edcrm.memory)."""
    line = next(
        line for line in (REPO / "Procfile").read_text().splitlines() if line.startswith("worker_recordings:")
    )
    # Run by a shell, as Procfile runners do (the line sets variables with `env`), with the virtualenv's
    # scripts first on PATH; exec: the shell becomes the worker.
    env = {**env, "PATH": f"{helpers.BIN}{os.pathsep}{env.get('PATH', '')}"}
    argv = ["/bin/sh", "-c", "exec " + line.split(":", 1)[1].strip()]
    return helpers.Service(argv, env=env, log_path=log_path, name="worker_recordings")


#: boto3's upload_file in a plain Python process of its own (no edcrm imported, nothing of the benchmark's
#: process shared), with the client settings edcrm uses; prints the seconds it took.
UPLOAD_FILE = """
import sys, time, boto3
from botocore.config import Config
path, endpoint = sys.argv[1], sys.argv[2]
config = Config(signature_version="s3v4", s3={"addressing_style": "path"},
                request_checksum_calculation="when_required", response_checksum_validation="when_required")
s3 = boto3.session.Session().client("s3", endpoint_url=endpoint, config=config)
started = time.perf_counter()
s3.upload_file(path, "baseline", "recording.wav")
print(time.perf_counter() - started)
s3.delete_object(Bucket="baseline", Key="recording.wav")
"""


def upload_file_seconds(endpoint: str, recording, folder: Path, runs: int = 2) -> float:
    """boto3's upload_file of the recording from a local file (its default transfer settings), in a
    process of its own: the fastest of runs."""
    with tempfile.NamedTemporaryFile(dir=folder) as local:
        for data in recording:
            local.write(data)
        local.flush()
        env = helpers.service_env(**AWS)
        argv = [sys.executable, "-c", UPLOAD_FILE, local.name, endpoint]
        times = [
            float(subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout)
            for _ in range(runs)
        ]
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mb", type=int, default=1024, help="the recording's size (default 1024 MiB)")
    parser.add_argument("--chunk-mb", type=int, default=1, help="the chunk size (default 1 MiB)")
    args = parser.parse_args()
    size, chunk = args.size_mb * MIB, args.chunk_mb * MIB
    logs = Path(tempfile.mkdtemp(prefix="edcrm-bench-recordings-"))
    redis.Redis.from_url(REDIS_URL).flushdb()
    s3_port = helpers.free_port()
    endpoint = f"http://127.0.0.1:{s3_port}"
    moto = helpers.Service(
        [str(helpers.BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(s3_port)],
        env=helpers.service_env(**AWS),
        log_path=logs / "moto.log",
        name="moto_server",
    )
    with moto, helpers.fresh_postgres_database(SERVER_URL) as database_url:
        helpers.wait_for(lambda: _answers(endpoint), timeout=30, what="moto", watch=moto)
        s3 = boto3.session.Session().client(
            "s3", endpoint_url=endpoint, config=client_config(), **_credentials()
        )
        s3.create_bucket(Bucket="recordings")
        s3.create_bucket(Bucket="baseline")
        port = helpers.free_port()
        env = helpers.service_env(
            DATABASE_URL=database_url,
            REDIS_URL=REDIS_URL,
            STORAGE_URL="s3://recordings/edcrm",
            S3_ENDPOINT_URL=endpoint,
            EDCRM_INSTANCE_PATH=logs / "instance",
            PORT=port,
            MAX_RECORDING_BYTES=size + MIB,
            MAX_CHUNK_BYTES=chunk,
            WEB_CONCURRENCY=1,
            **AWS,
        )
        helpers.run_flask("db", "upgrade", env=env)
        demo = json.loads(helpers.run_flask("edcrm", "seed-demo", "--json", env=env).stdout)
        telecaller = demo["telecallers"][0]
        argv = [sys.executable, "-c", helpers.MAKE_CALL_LOG, str(telecaller["id"])]
        setup = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, check=True)
        call_log_id = int(setup.stdout.strip())
        engine = sa.create_engine(database_url)
        with (
            helpers.start_gunicorn(env, logs / "gunicorn.log") as web,
            start_recordings_worker(env, logs / "dramatiq.log") as worker,
        ):
            base = f"http://127.0.0.1:{port}"
            helpers.wait_for(
                lambda: helpers.http_get(f"{base}/healthz"), timeout=60, what="gunicorn", watch=web
            )
            http = requests.Session()
            http.headers["Authorization"] = f"Bearer {telecaller['token']}"

            idle = {**web.memory_mb("VmRSS"), **worker.memory_mb("VmRSS")}
            whole = hashlib.sha256()
            for data in chunks(size, chunk):
                whole.update(data)
            body = {
                "call_log_id": call_log_id,
                "filename": "bench.wav",
                "expected_chunks": -(-size // chunk),
                "total_size": size,
                "sha256": whole.hexdigest(),
            }
            upload_id = http.post(f"{base}/api/recordings/uploads", json=body, timeout=30).json()["upload_id"]
            started = time.perf_counter()
            for index, data in enumerate(chunks(size, chunk)):
                headers = {"X-Chunk-SHA256": hashlib.sha256(data).hexdigest()}
                url = f"{base}/api/recordings/uploads/{upload_id}/chunks/{index}"
                response = http.put(url, data=data, headers=headers, timeout=120)
                if response.status_code != 200:
                    raise SystemExit(f"chunk {index}: {response.status_code} {response.text}")
            ingest = time.perf_counter() - started

            # The baseline, now: moto's server holds the same objects (the chunks) as during finalize.
            baseline = upload_file_seconds(endpoint, chunks(size, chunk), logs)

            started = time.perf_counter()
            job_id = http.post(f"{base}/api/recordings/uploads/{upload_id}/complete", timeout=30).json()[
                "job_id"
            ]
            row = helpers.wait_for_job(engine, job_id, helpers.FINAL_STATES, timeout=3600, watch=worker)
            finalize = time.perf_counter() - started
            if row["state"] != "succeeded":
                print(f"the job ended {row['state']}: {row['errors']}\n{worker.output()}", file=sys.stderr)
                return 1
            actor = (row["finished_at"] - row["started_at"]).total_seconds()
            web_rss, worker_rss = web.memory_mb(), worker.memory_mb()
        engine.dispose()

    ratio = actor / baseline
    what = f"a {args.size_mb} MiB recording in {args.chunk_mb} MiB chunks"
    print(f"\n{what}, through gunicorn into moto's S3 server\n")
    print(f"ingest (PUT chunks, one at a time)  {ingest:8.2f} s  {size / MIB / ingest:8.1f} MB/s")
    print(f"finalize: the actor, start to end   {actor:8.2f} s")
    print(f"finalize: complete -> succeeded     {finalize:8.2f} s  (with the worker's pick-up)")
    print(f"boto3 upload_file, same bytes       {baseline:8.2f} s")
    verdict = f"{'PASS' if ratio <= TARGET_RATIO else 'FAIL'} (target <= {TARGET_RATIO})"
    print(f"finalize / upload_file              {ratio:8.2f}    {verdict}")
    ok = ratio <= TARGET_RATIO
    for role, peaks in (("web (gunicorn)", web_rss), ("worker (dramatiq)", worker_rss)):
        for pid, mb in sorted(peaks.items()):
            within = mb <= TARGET_RSS_MB
            ok &= within
            verdict = f"{'PASS' if within else 'FAIL'} (target <= {TARGET_RSS_MB} MB)"
            before = idle.get(pid, 0)
            print(f"peak RSS {role:<18} pid {pid:<7} {mb:7.1f} MB  {verdict}; idle before: {before:.1f} MB")
    return 0 if ok else 1


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code < 500
    except requests.ConnectionError:
        return False


def _credentials() -> dict:
    return {
        "aws_access_key_id": AWS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": AWS["AWS_SECRET_ACCESS_KEY"],
        "region_name": "us-east-1",
    }


if __name__ == "__main__":
    sys.exit(main())
