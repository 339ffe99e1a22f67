"""A real gunicorn on the embedded defaults (`make run`'s mode) with seed-demo's people, for the hostile
suite: `start_server(tmp_path, **settings)` and the `Server` it yields, and polling until a state."""

from __future__ import annotations

import json
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.support.processes import (
    REPO,
    Service,
    free_port,
    http_get,
    run_flask,
    service_env,
    start_gunicorn,
    wait_for,
)

#: A call log of the telecaller whose id is argv[1], on a new lead with the phone of argv[2]; prints its id.
MAKE_CALL_LOG = """
import sys
from edcrm import create_app
from edcrm.extensions import db
from edcrm.models import CallLog, CallOutcome, Lead, User
app = create_app()
with app.app_context():
    telecaller = db.session.get(User, int(sys.argv[1]))
    lead = Lead(branch_id=telecaller.branch_id, telecaller_id=telecaller.id, student_name="Caller",
                phone_number=sys.argv[2])
    call_log = CallLog(lead=lead, telecaller_id=telecaller.id, outcome=CallOutcome.CONNECTED)
    db.session.add(call_log)
    db.session.commit()
    print(call_log.id)
"""


def make_call_log(env: dict[str, str], telecaller_id: int) -> int:
    phone = f"+9198{random.randrange(10**8):08d}"
    argv = [sys.executable, "-c", MAKE_CALL_LOG, str(telecaller_id), phone]
    made = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, check=True)
    return int(made.stdout.strip())


@dataclass
class Server:
    """A running gunicorn and the demo branch it serves."""

    base: str
    port: int
    env: dict[str, str]
    process: Service
    instance: Path
    admin: dict  # seed-demo's admin: id, email, password, token
    telecallers: list[dict]
    call_log_id: int  # a call log of telecallers[0]
    tmp_path: Path
    _sessions: dict = field(default_factory=dict)

    @property
    def telecaller(self) -> dict:
        return self.telecallers[0]

    def session(self, who: dict) -> requests.Session:
        """A requests session with who's API token."""
        if who["email"] not in self._sessions:
            session = requests.Session()
            session.headers["Authorization"] = f"Bearer {who['token']}"
            self._sessions[who["email"]] = session
        return self._sessions[who["email"]]

    def api(self, method: str, path: str, who: dict | None = None, **kwargs) -> requests.Response:
        """A request as who (the first telecaller by default)."""
        kwargs.setdefault("timeout", 30)
        return self.session(who or self.telecaller).request(method, f"{self.base}{path}", **kwargs)

    def new_call_log(self, telecaller: dict | None = None) -> int:
        """A fresh call log of telecaller's (the first by default): its id."""
        return make_call_log(self.env, (telecaller or self.telecaller)["id"])

    def raw(self, request: bytes, *, then_close: bool = True, timeout: float = 30) -> tuple[int, bytes]:
        """Send request bytes as they are on a new connection (shut our side when then_close), read the
        answer: (status, whole response)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            sock.sendall(request)
            if then_close:
                sock.shutdown(socket.SHUT_WR)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
                if b"\r\n\r\n" in answer and not then_close and _complete(answer):
                    break
        status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0
        return status, answer

    def flask(self, *args: str, **kwargs):
        return run_flask(*args, env=self.env, **kwargs)


def _complete(answer: bytes) -> bool:
    head, _, body = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":", 1)[1])
    return False


def start_server(tmp_path: Path, **settings: str | None) -> Iterator[Server]:
    """gunicorn on a fresh SQLite database and storage folder (unless settings say otherwise)."""
    port = free_port()
    instance = tmp_path / "instance"
    env = service_env(
        EDCRM_INSTANCE_PATH=instance,
        STORAGE_URL=(tmp_path / "storage").as_uri(),
        PORT=port,
        HOST="127.0.0.1",
        SECRET_KEY="hostile-secret",
        JOB_MIN_BACKOFF_MS="200",
        JOB_MAX_BACKOFF_MS="400",
        TMPDIR=tmp_path,
    )
    env.update({name: value for name, value in settings.items() if value is not None})
    for name, value in settings.items():
        if value is None:
            env.pop(name, None)
    run_flask("db", "upgrade", env=env)
    demo = json.loads(run_flask("edcrm", "seed-demo", "--json", env=env).stdout)
    call_log_id = make_call_log(env, demo["telecallers"][0]["id"])
    with start_gunicorn(env, tmp_path / "gunicorn.log") as web:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: http_get(f"{base}/healthz"), timeout=60, what="gunicorn", watch=web)
        yield Server(
            base=base,
            port=port,
            env=env,
            process=web,
            instance=instance,
            admin=demo["admin"],
            telecallers=demo["telecallers"],
            call_log_id=call_log_id,
            tmp_path=tmp_path,
        )


def wait_until(predicate, *, timeout: float = 30, what: str = "the condition"):
    """predicate's first truthy value within timeout (states, never fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)
