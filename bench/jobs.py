"""Benchmark: no-op jobs through Redis and a real worker, with edcrm's job ledger and without it.

    .venv/bin/python bench/jobs.py [--n 5000] [--threads 8]      (or `make bench-jobs`)

ledger: the production stack. A fresh PostgreSQL database (created, migrated, dropped at the end), a
        `dramatiq edcrm.actors --queues default --processes 1 --threads T` worker, and N `ping` jobs sent
        through edcrm's broker, so each gets its ledger row as in production.
bare:   `dramatiq bench.bare_ping` with the same processes and threads: the same no-op actor on a plain
        RedisBroker with Dramatiq's default middleware.

Each run has a Redis database of its own, flushed first. Its clock runs from the first send to the moment
the queue is drained (HLEN of dramatiq:default.msgs is 0: every message processed and acked); the
enqueue phase is timed too. A few warm-up jobs go first, untimed. Needs PostgreSQL and Redis.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import redis
import sqlalchemy as sa

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
QUEUE_KEY = "dramatiq:default.msgs"
DEAD_KEY = "dramatiq:default.XQ.msgs"
#: edcrm's settings: the subprocesses get only the ones this script gives them.
EDCRM_VARIABLES = ("DATABASE_URL", "REDIS_URL", "STORAGE_URL", "S3_ENDPOINT_URL", "SECRET_KEY", "PORT")


@dataclass
class Result:
    name: str
    n: int
    enqueue_s: float
    total_s: float

    @property
    def rate(self) -> float:
        return self.n / self.total_s


class Worker:
    """A `dramatiq …` process in a session of its own, its output in a log file."""

    def __init__(self, module: str, env: dict[str, str], threads: int, log_path: Path):
        self.log_path = log_path
        argv = [str(BIN / "dramatiq"), module, "--queues", "default", "--processes", "1"]
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                [*argv, "--threads", str(threads)],
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"the worker died; its output:\n{self.log_path.read_text()[-4000:]}")

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while "ready for action" not in self.log_path.read_text(errors="replace"):
            self.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not start in {timeout}s:\n{self.log_path.read_text()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM (dramatiq stops its children), then SIGKILL whatever is left of the group."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(15)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)


def base_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in EDCRM_VARIABLES}
    return env | settings | {"PYTHONUNBUFFERED": "1"}


@contextlib.contextmanager
def fresh_redis(url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield client
    finally:
        client.flushdb()
        client.close()


@contextlib.contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A new PostgreSQL database on server_url's server, migrated with `flask db upgrade`; dropped after."""
    server = sa.make_url(server_url)
    name = f"edcrm_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        url = server.set(database=name).render_as_string(hide_password=False)
        subprocess.run(
            [str(BIN / "flask"), "--app", "app", "db", "upgrade"],
            cwd=REPO,
            env=base_env(DATABASE_URL=url, SECRET_KEY="bench"),
            check=True,
            capture_output=True,
        )
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def measure(
    name: str, send: Callable[[], object], client: redis.Redis, worker: Worker, n: int, warmup: int
) -> Result:
    def wait_drained(timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while client.hlen(QUEUE_KEY):
            worker.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}: {client.hlen(QUEUE_KEY)} messages left after {timeout}s")
            time.sleep(0.002)

    # Warm-up, untimed: connections open, code paths hot, and the consumer polling (an idle one backs
    # off for up to a second between fetches).
    for _ in range(warmup):
        send()
    wait_drained()
    started = time.perf_counter()
    for _ in range(n):
        send()
    sent = time.perf_counter()
    wait_drained()
    done = time.perf_counter()
    if client.hlen(DEAD_KEY):
        raise RuntimeError(f"{name}: {client.hlen(DEAD_KEY)} messages were dead-lettered")
    return Result(name, n, enqueue_s=sent - started, total_s=done - started)


def run_bare(args, logs: Path) -> Result:
    from dramatiq import Message
    from dramatiq.brokers.redis import RedisBroker

    with fresh_redis(args.bare_redis_url) as client:
        worker = Worker("bench.bare_ping", base_env(REDIS_URL=args.bare_redis_url), args.threads, logs / "bare.log")
        try:
            worker.wait_ready()
            # What bare_ping.ping.send() does, on a broker of this process's own (Dramatiq's global one
            # is edcrm's here): a plain RedisBroker with the default middleware.
            broker = RedisBroker(url=args.bare_redis_url)
            broker.declare_queue("default")

            def send():
                message = Message(queue_name="default", actor_name="ping", args=(), kwargs={}, options={})
                return broker.enqueue(message)

            return measure("bare dramatiq", send, client, worker, args.n, args.warmup)
        finally:
            worker.stop()


def run_ledger(args, logs: Path) -> Result:
    with fresh_redis(args.ledger_redis_url) as client, fresh_database(args.postgres_url) as database_url:
        env = base_env(REDIS_URL=args.ledger_redis_url, DATABASE_URL=database_url, SECRET_KEY="bench")
        worker = Worker("edcrm.actors", env, args.threads, logs / "ledger.log")
        try:
            worker.wait_ready()
            # This process sends as the web process would: through edcrm's broker, ledger included.
            os.environ.update(env)
            from edcrm import create_app
            from edcrm.actors.maintenance import ping
            from edcrm.extensions import db

            app = create_app()
            result = measure("edcrm + ledger", ping.send, client, worker, args.n, args.warmup)
            with app.app_context():
                states = dict(db.session.execute(sa.text("SELECT state, count(*) FROM jobs GROUP BY state")).all())
                db.engine.dispose()
            expected = {"succeeded": args.n + args.warmup}
            if states != expected:
                raise RuntimeError(f"the ledger shows {states}, expected {expected}")
            print(f"ledger check: {states['succeeded']} jobs succeeded (warm-up included), none in another state")
            return result
        finally:
            worker.stop()


def report(results: list[Result], threads: int) -> None:
    print(f"\nno-op jobs on queue default, worker: 1 process x {threads} threads, Redis on 127.0.0.1")
    header = f"{'':<16}{'jobs':>7}{'enqueue s':>11}{'enqueue/s':>11}{'total s':>10}{'jobs/s':>9}"
    print(header)
    print("-" * len(header))
    for r in results:
        print(f"{r.name:<16}{r.n:>7}{r.enqueue_s:>11.2f}{r.n / r.enqueue_s:>11.0f}{r.total_s:>10.2f}{r.rate:>9.0f}")
    bare, ledger = results
    ratio = ledger.rate / bare.rate
    verdict = "meets" if ratio >= 0.5 else "MISSES"
    print(f"\nledger / bare throughput: {ratio:.2f} ({verdict} the target of 0.50)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=5000, help="jobs per run (default 5000)")
    parser.add_argument("--threads", type=int, default=8, help="worker threads (default 8)")
    parser.add_argument("--warmup", type=int, default=100, help="untimed jobs first (default 100)")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"),
        help="a server where this script may create and drop a database",
    )
    parser.add_argument("--bare-redis-url", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--ledger-redis-url", default="redis://127.0.0.1:6379/13")
    args = parser.parse_args()

    # SIGTERM unwinds like Ctrl-C, so the workers and the database are cleaned up either way.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="edcrm-bench-") as tmp:
        os.environ["EDCRM_INSTANCE_PATH"] = tmp  # keep the app's instance/ files out of the repository
        results = [run_bare(args, Path(tmp)), run_ledger(args, Path(tmp))]
    report(results, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
