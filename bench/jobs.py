"""Benchmark: no-op jobs through Redis and a real worker, with edcrm's job ledger and without it.

    .venv/bin/python bench/jobs.py [--n 5000] [--threads 8]      (or `make bench-jobs`)

Needs PostgreSQL and Redis (Redis DB 10, or BENCH_REDIS_URL, is flushed before each scenario and at the end).

Two scenarios, run identically one after the other:
- ledger: the production stack. A fresh PostgreSQL database (created, migrated with `flask db upgrade`,
  dropped at the end), a `dramatiq edcrm.actors` worker, and `ping` jobs sent through edcrm's own broker
  by a producer process that called create_app(), so every send writes its ledger row as in production.
- bare: `dramatiq bench.bare_actors`, a no-op `ping` on a plain RedisBroker with Dramatiq's default
  middleware, sent the same way by the same kind of producer process.

For each: the worker starts (1 process x --threads threads), and the producer starts; 50 warm-up jobs
must be drained before anything is timed, so neither start-up counts. Then two timed rounds of N jobs:
- worker (the figure that counts): the worker is paused (SIGSTOP) while the producer sends N, which times
  the enqueue phase alone; the clock then runs from resuming the worker until the queue is drained.
- live: the producer sends N while the worker runs; the clock runs from the first send until drained,
  so it is bounded by the slower of the two sides.
Drained means nothing left in Redis (message hash, queue list, delay queue, unacked sets) and, for the
ledger, every job sent so far `succeeded` in the table; both are polled every --poll-ms (50) ms.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis
import sqlalchemy as sa

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SERVER_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/10")
WARMUP = 50
TARGET = 0.5

# The keys of Dramatiq's Redis broker for queue `default` (see dramatiq/brokers/redis/dispatch.lua):
# a message lives in the hash from enqueue to ack; its id sits in the list until fetched, then in the
# fetching worker's unacked set until acked. Delayed messages (retries) go through `default.DQ`.
MESSAGES = ("dramatiq:default.msgs", "dramatiq:default.DQ.msgs")
LISTS = ("dramatiq:default", "dramatiq:default.DQ")
UNACKED = "dramatiq:__acks__.*"
DEAD = ("dramatiq:default.XQ.msgs",)

#: edcrm's settings (the contract's variables): the subprocesses get only those this script gives them.
EDCRM_VARIABLES = {
    *("DATABASE_URL", "REDIS_URL", "STORAGE_URL", "S3_ENDPOINT_URL", "SECRET_KEY", "EDCRM_INSTANCE_PATH"),
    *("JOB_MIN_BACKOFF_MS", "JOB_MAX_BACKOFF_MS", "JOB_RETENTION_DAYS", "FAILED_JOB_RETENTION_DAYS"),
    *("MAX_CSV_BYTES", "MAX_RECORDING_BYTES", "MAX_CHUNK_BYTES", "UPLOAD_SESSION_TTL_HOURS", "PORT"),
}

#: The producer, run as `python -c PRODUCER ledger|bare WARMUP` from the repository root: it sends the
#: warm-up jobs, says "warm", then for each number n read on stdin sends n jobs and prints when the
#: first and the last send happened (CLOCK_MONOTONIC is one clock for every process of the machine).
PRODUCER = """
import json, sys, time
kind, warmup = sys.argv[1], int(sys.argv[2])
if kind == "ledger":
    from edcrm import create_app
    create_app()  # REDIS_URL and DATABASE_URL are in the environment: edcrm's Redis broker, ledger on
    from edcrm.actors.maintenance import ping
else:
    from bench.bare_actors import ping
for _ in range(warmup):
    ping.send()
print("warm", flush=True)
for line in sys.stdin:
    n = int(line)
    first = time.monotonic()
    for _ in range(n):
        ping.send()
    print(json.dumps([first, time.monotonic()]), flush=True)
"""


@dataclass
class Round:
    enqueue_s: float
    process_s: float


@dataclass
class Scenario:
    name: str
    worker_argv: list[str]
    producer_kind: str
    env: dict[str, str]
    #: Jobs `succeeded` in the ledger, and jobs per state (None: no ledger to wait for).
    succeeded: Callable[[], int] | None = None
    states: Callable[[], dict[str, int]] | None = None
    rounds: dict[str, Round] = field(default_factory=dict)


class Group:
    """A subprocess in a session (and process group) of its own, its stderr in a log file."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path, **popen):
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                argv, cwd=REPO, env=env, stderr=log, start_new_session=True, **popen
            )

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            log = self.log_path.read_text(errors="replace")[-4000:]
            raise RuntimeError(f"{self.process.args[0]} exited ({self.process.returncode}):\n{log}")

    def stop(self) -> None:
        """SIGCONT (it may be paused) and SIGTERM to the group, then SIGKILL whatever is left of it."""
        self.signal(signal.SIGCONT)
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(15)
        self.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)


class Producer(Group):
    def __init__(self, kind: str, env: dict[str, str], log_path: Path):
        argv = [sys.executable, "-c", PRODUCER, kind, str(WARMUP)]
        super().__init__(argv, env, log_path, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line.strip())

    def send(self, n: int) -> None:
        self.process.stdin.write(f"{n}\n")
        self.process.stdin.flush()

    def answer(self, timeout: float | None = None) -> str | None:
        """The producer's next line: waits up to timeout seconds (None: forever); None if none came."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with contextlib.suppress(queue.Empty):
                return self.lines.get(timeout=0.05)
            self.check_alive()
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.process.stdin.close()
        super().stop()


def backlog(client: redis.Redis) -> int:
    """Messages not yet acked (a message counts twice while it is in both the hash and a list or set)."""
    with client.pipeline(transaction=False) as pipe:
        for key in MESSAGES:
            pipe.hlen(key)
        for key in LISTS:
            pipe.llen(key)
        for key in client.scan_iter(match=UNACKED):
            pipe.scard(key)
        return sum(pipe.execute())


def wait_drained(
    client: redis.Redis,
    scenario: Scenario,
    processes: list[Group],
    *,
    expected: int,
    poll: float,
    producer: Producer | None = None,
    timeout: float = 900,
) -> tuple[float, list[float] | None]:
    """Poll until the producer (if given) has answered, Redis holds no message and the ledger shows
    `expected` jobs succeeded; returns the time of the poll that saw it all, and the producer's answer."""
    deadline = time.monotonic() + timeout
    answer = None
    while True:
        now = time.monotonic()
        if producer is not None and answer is None:
            line = producer.answer(timeout=0)
            answer = json.loads(line) if line else None
        if (
            (producer is None or answer is not None)
            and backlog(client) == 0
            and (scenario.succeeded is None or scenario.succeeded() >= expected)
        ):
            return now, answer
        for process in processes:
            process.check_alive()
        if now > deadline:
            done = scenario.succeeded() if scenario.succeeded else "n/a"
            raise RuntimeError(
                f"{scenario.name}: not drained after {timeout}s (Redis backlog {backlog(client)}, "
                f"succeeded {done} of {expected})"
            )
        time.sleep(max(0.0, now + poll - time.monotonic()))


def run(scenario: Scenario, args, logs: Path) -> None:
    """Both timed rounds of a scenario, on a flushed Redis database; fills scenario.rounds."""
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    stem = logs / scenario.producer_kind
    worker = producer = None
    try:
        worker = Group(scenario.worker_argv, scenario.env, stem.with_suffix(".worker.log"))
        producer = Producer(scenario.producer_kind, scenario.env, stem.with_suffix(".producer.log"))
        processes = [worker, producer]
        if producer.answer(timeout=120) != "warm":
            raise RuntimeError(f"{scenario.name}: the producer did not start in 120 s")
        wait = dict(client=client, scenario=scenario, processes=processes, poll=args.poll_ms / 1000)
        # Ready: the worker has drained the warm-up (it may still be booting while the producer sends).
        wait_drained(**wait, expected=WARMUP, timeout=120)

        # Worker round: enqueue alone (worker paused), then the worker alone drains the queue.
        worker.signal(signal.SIGSTOP)
        try:
            producer.send(args.n)
            first, last = json.loads(producer.answer())
        finally:
            worker.signal(signal.SIGCONT)
        resumed = time.monotonic()
        done, _ = wait_drained(**wait, expected=WARMUP + args.n)
        scenario.rounds["worker"] = Round(last - first, done - resumed)

        # Live round: the producer sends while the worker works.
        producer.send(args.n)
        done, (first, last) = wait_drained(**wait, expected=WARMUP + 2 * args.n, producer=producer)
        scenario.rounds["live"] = Round(last - first, done - first)

        dead = sum(client.hlen(key) for key in DEAD)
        if dead:
            raise RuntimeError(f"{scenario.name}: {dead} messages were dead-lettered")
        if scenario.states is not None:
            states, expected = scenario.states(), {"succeeded": WARMUP + 2 * args.n}
            if states != expected:
                raise RuntimeError(f"{scenario.name}: the ledger shows {states}, expected {expected}")
    finally:
        for process in (producer, worker):
            if process is not None:
                process.stop()
        client.flushdb()
        client.close()


def subprocess_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in EDCRM_VARIABLES}
    return env | settings | {"PYTHONUNBUFFERED": "1"}


@contextlib.contextmanager
def fresh_database(instance_path: str) -> Iterator[str]:
    """A new PostgreSQL database, migrated with `flask db upgrade`; dropped afterwards, whatever happens."""
    server = sa.make_url(SERVER_URL)
    name = f"edcrm_bench_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        url = server.set(database=name).render_as_string(hide_password=False)
        env = subprocess_env(DATABASE_URL=url, EDCRM_INSTANCE_PATH=instance_path, SECRET_KEY="bench")
        migrate = subprocess.run(
            [str(BIN / "flask"), "--app", "app", "db", "upgrade"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
        )
        if migrate.returncode != 0:
            raise RuntimeError(f"`flask db upgrade` failed:\n{migrate.stdout}{migrate.stderr}")
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def ledger_queries(engine: sa.Engine) -> tuple[Callable[[], int], Callable[[], dict[str, int]]]:
    def succeeded() -> int:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT count(*) FROM jobs WHERE state = 'succeeded'")).scalar_one()

    def states() -> dict[str, int]:
        with engine.connect() as conn:
            return dict(conn.execute(sa.text("SELECT state, count(*) FROM jobs GROUP BY state")).all())

    return succeeded, states


def worker_argv(module: str, threads: int, *extra: str) -> list[str]:
    argv = [str(BIN / "dramatiq"), module, *extra, "--queues", "default", "--processes", "1"]
    return [*argv, "--threads", str(threads)]


def report(scenarios: list[Scenario], args) -> bool:
    print(f"\nno-op jobs on Redis; worker: 1 process x {args.threads} threads; N = {args.n} per round")
    print("worker: enqueue with the worker paused, then the worker alone drains the queue (the figure)")
    print("live:   enqueue while the worker runs; process s = first send to drained\n")
    header = f"{'scenario':<16}{'round':<8}{'N':>6}{'enqueue s':>11}{'enqueue jobs/s':>16}"
    print(f"{header}{'process s':>11}{'jobs/s':>9}")
    for kind in ("worker", "live"):
        for scenario in scenarios:
            r = scenario.rounds[kind]
            print(
                f"{scenario.name:<16}{kind:<8}{args.n:>6}{r.enqueue_s:>11.2f}{args.n / r.enqueue_s:>16.0f}"
                f"{r.process_s:>11.2f}{args.n / r.process_s:>9.0f}"
            )
    bare, ledger = (s.rounds for s in scenarios)
    ratio = bare["worker"].process_s / ledger["worker"].process_s
    live = bare["live"].process_s / ledger["live"].process_s
    enqueue = bare["worker"].enqueue_s / ledger["worker"].enqueue_s
    print(f"\nledger / bare, enqueue jobs/s: {enqueue:.2f}; live jobs/s: {live:.2f}")
    verdict = "PASS" if ratio >= TARGET else "FAIL"
    print(f"ledger / bare, worker jobs/s: {ratio:.2f}  {verdict} (target >= {TARGET:.2f})")
    return ratio >= TARGET


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=5000, help="jobs per timed round (default 5000)")
    parser.add_argument("--threads", type=int, default=8, help="worker threads (default 8)")
    parser.add_argument("--poll-ms", type=int, default=50, help="drain polling interval (default 50)")
    args = parser.parse_args()

    # SIGTERM unwinds like Ctrl-C: the finally blocks stop the subprocesses and drop the database.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="edcrm-bench-") as tmp:
        bare = Scenario(
            "bare dramatiq",
            worker_argv("bench.bare_actors", args.threads, "--path", "."),
            "bare",
            subprocess_env(REDIS_URL=REDIS_URL),
        )
        try:
            run(bare, args, Path(tmp))
            with fresh_database(tmp) as database_url:
                settings = {"DATABASE_URL": database_url, "EDCRM_INSTANCE_PATH": tmp, "SECRET_KEY": "bench"}
                env = subprocess_env(REDIS_URL=REDIS_URL, **settings)
                # One connection kept open for the polls (a new one per poll would cost PostgreSQL a fork).
                engine = sa.create_engine(database_url, pool_size=1)
                succeeded, states = ledger_queries(engine)
                ledger = Scenario(
                    "edcrm + ledger",
                    worker_argv("edcrm.actors", args.threads),
                    "ledger",
                    env,
                    succeeded=succeeded,
                    states=states,
                )
                try:
                    run(ledger, args, Path(tmp))
                finally:
                    engine.dispose()
        except Exception:
            print(f"\nlogs in {tmp}:", file=sys.stderr)
            for log in sorted(Path(tmp).glob("*.log")):
                print(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}", file=sys.stderr)
            raise
    return 0 if report([bare, ledger], args) else 1


if __name__ == "__main__":
    sys.exit(main())
