"""Running the real thing from the integration tests: the `flask` CLI, `dramatiq edcrm.actors`, gunicorn.

Every long-lived process starts in a session of its own and writes to a log file (never a pipe, which
would block it once full). Stopping one sends SIGTERM to its leader, which shuts its children down as in
production (a second SIGTERM would make dramatiq kill its workers hard), then SIGKILL to the whole
process group for whatever is left; processes a test left behind are killed at exit, whatever happened.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[2]
#: The virtual environment's scripts (flask, dramatiq, gunicorn), next to the interpreter running pytest.
BIN = Path(sys.executable).parent

#: What edcrm reads from the environment: a subprocess gets none of the developer's (or conftest's)
#: values, only those its test gives it.
EDCRM_VARIABLES = {
    "DATABASE_URL",
    "REDIS_URL",
    "STORAGE_URL",
    "S3_ENDPOINT_URL",
    "SECRET_KEY",
    "PORT",
    "HOST",
    "LOGIN_RATE_LIMIT",
    "TRUSTED_PROXIES",
    "BODY_TIMEOUT_S",
    "EDCRM_INSTANCE_PATH",
    "FLASK_APP",
    "MAX_CSV_BYTES",
    "MAX_RECORDING_BYTES",
    "MAX_CHUNK_BYTES",
    "JOB_MIN_BACKOFF_MS",
    "JOB_MAX_BACKOFF_MS",
    "JOB_RETENTION_DAYS",
    "FAILED_JOB_RETENTION_DAYS",
    "UPLOAD_SESSION_TTL_HOURS",
    "TUS_UPLOAD_TTL_HOURS",
    "TUS_PART_BYTES",
    "CORS_ORIGINS",
    "WEB_CONCURRENCY",
    "WEB_THREADS",
    "METRICS_TOKEN",
    # Where metrics go: the web's multiprocess files, the workers' exposition server and files.
    "PROMETHEUS_MULTIPROC_DIR",
    "prometheus_multiproc_dir",
    "dramatiq_prom_host",
    "dramatiq_prom_port",
    "dramatiq_prom_db",
}

FINAL_STATES = {"succeeded", "failed", "cancelled"}


def service_env(**settings: str | os.PathLike | None) -> dict[str, str]:
    """os.environ without edcrm's variables, plus settings (None leaves a variable unset)."""
    env = {k: v for k, v in os.environ.items() if k not in EDCRM_VARIABLES}
    env.update({k: str(v) for k, v in settings.items() if v is not None})
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_flask(*args: str, env: Mapping[str, str], timeout: float = 60, check: bool = True):
    """`flask --app app ARGS…` from the repository root; on an unexpected exit, fail with its output."""
    result = subprocess.run(
        [str(BIN / "flask"), "--app", "app", *args],
        cwd=REPO,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"`flask {' '.join(args)}` exited {result.returncode}\n"
            f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        )
    return result


# -- long-lived processes ---------------------------------------------------------------------------------

_running: set[Service] = set()


#: A call log of the telecaller whose id is argv[1]; prints its id.
MAKE_CALL_LOG = """
import sys
from edcrm import create_app
from edcrm.extensions import db
from edcrm.models import CallLog, CallOutcome, Lead, User
app = create_app()
with app.app_context():
    telecaller = db.session.get(User, int(sys.argv[1]))
    lead = Lead(branch_id=telecaller.branch_id, telecaller_id=telecaller.id, student_name="Recorded",
                phone_number="+919800000123")
    call_log = CallLog(lead=lead, telecaller_id=telecaller.id, outcome=CallOutcome.CONNECTED)
    db.session.add(call_log)
    db.session.commit()
    print(call_log.id)
"""


class Service:
    """A process (and its children) started in its own session, its output in a log file."""

    def __init__(
        self,
        argv: list[str],
        *,
        env: Mapping[str, str],
        log_path: Path,
        name: str,
        cwd: Path | None = None,
    ):
        self.name = name
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                argv,
                cwd=cwd or REPO,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() reaches the forked children
            )
        _running.add(self)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self, tail: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except FileNotFoundError:
            return ""

    def memory_mb(self, field: str = "VmHWM") -> dict[int, float]:
        """VmHWM, the peak RSS (or another field of /proc/PID/status), of each process of the group, in MB."""
        sizes = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if os.getpgid(int(entry.name)) != self.process.pid:
                    continue
                for line in (entry / "status").read_text().splitlines():
                    if line.startswith(f"{field}:"):
                        sizes[int(entry.name)] = int(line.split()[1]) / 1024
            except (OSError, ProcessLookupError):
                continue
        return sizes

    def describe(self) -> str:
        status = "running" if self.alive else f"exited {self.process.returncode}"
        return f"{self.name} ({status}); its output:\n{self.output()}"

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM the leader (it stops its children), wait for it, then SIGKILL whatever is left."""
        if self.alive:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)
        self.kill()

    def kill(self) -> None:
        """SIGKILL the whole group at once: a crash, as far as the processes can tell."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)
        _running.discard(self)

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


@atexit.register
def _kill_leftovers() -> None:
    for service in list(_running):
        service.kill()


def start_dramatiq(
    env: Mapping[str, str], log_path: Path, *, processes: int = 1, threads: int = 2
) -> Service:
    """`dramatiq edcrm.actors --processes N --threads M`: the production worker."""
    argv = [str(BIN / "dramatiq"), "edcrm.actors", "--processes", str(processes), "--threads", str(threads)]
    return Service(argv, env=env, log_path=log_path, name="dramatiq edcrm.actors")


def start_gunicorn(env: Mapping[str, str], log_path: Path, *, cwd: Path | None = None) -> Service:
    """`gunicorn -c gunicorn.conf.py app:app`, as `make run` and the Procfile's web process start it;
    from another working folder than the repository's when cwd is given (the app found on PYTHONPATH),
    as a second host would run it."""
    if cwd is None:
        argv = [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "app:app"]
        return Service(argv, env=env, log_path=log_path, name="gunicorn")
    argv = [str(BIN / "gunicorn"), "-c", str(REPO / "gunicorn.conf.py"), "app:app"]
    env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))}
    return Service(argv, env=env, log_path=log_path, name=f"gunicorn in {cwd}", cwd=cwd)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- waiting ---------------------------------------------------------------------------------------------


def wait_for(
    predicate: Callable[[], Any],
    *,
    timeout: float,
    what: str,
    watch: Service | None = None,
    interval: float = 0.05,
) -> Any:
    """Poll predicate until it returns something truthy, and return that. Fail after timeout, or as soon
    as the watched process has died (with its output: it says why)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = predicate()
        if last:
            return last
        if watch is not None and not watch.alive:
            raise AssertionError(f"{watch.name} died while waiting for {what}: {watch.describe()}")
        if time.monotonic() > deadline:
            detail = f"\n{watch.describe()}" if watch is not None else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{detail}")
        time.sleep(interval)


def http_get(url: str, timeout: float = 5) -> tuple[int, Any] | None:
    """(status, JSON body) of a GET, or None when nothing answers yet."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


# -- the ledger, read straight from the database ---------------------------------------------------------


def job_row(engine: sa.Engine, job_id: str) -> dict | None:
    """The job's ledger row as a dict, with its errors (oldest first) under "errors"; None if unknown."""
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT * FROM jobs WHERE id = :id"), {"id": job_id}).mappings().first()
        if row is None:
            return None
        errors = conn.execute(
            sa.text("SELECT attempt, error FROM job_errors WHERE job_id = :id ORDER BY id"), {"id": job_id}
        ).mappings()
        return dict(row) | {"errors": [dict(error) for error in errors]}


def wait_for_job(
    engine: sa.Engine,
    job_id: str,
    states: str | set[str],
    *,
    timeout: float = 20,
    watch: Service | None = None,
) -> dict:
    """The job's row once it is in one of states; fails on timeout, naming the state it was stuck in."""
    states = {states} if isinstance(states, str) else states
    seen: list[dict | None] = [None]

    def reached():
        seen[0] = job_row(engine, job_id)
        return seen[0] if seen[0] is not None and seen[0]["state"] in states else None

    try:
        return wait_for(reached, timeout=timeout, what=f"job {job_id} to be {'/'.join(states)}", watch=watch)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nlast ledger row: {seen[0]}") from None


# -- databases -------------------------------------------------------------------------------------------


@contextlib.contextmanager
def fresh_postgres_database(server_url: str) -> Iterator[str]:
    """A new, empty database on the server of server_url (dropped afterwards): its URL."""
    url = sa.make_url(server_url)
    name = f"edcrm_it_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
