"""Ceph RGW, a production S3 implementation, for the tests and benchmarks: Debian's `radosgw` on one node
(a monitor, one OSD keeping its data in memory, the gateway) on 127.0.0.1.

`ensure_rgw()` returns a running gateway: the one a previous session (or another xdist worker, or a
benchmark) started, when it still answers, or a fresh one. It installs Debian's packages when the
daemons are missing and this user may (root, or sudo without a password). Everything lives in one fixed
folder (`EDCRM_RGW_DIR`, /tmp/edcrm-test-rgw by default), guarded by a lock file, so that processes
starting at once share one cluster. The cluster is left running when the session ends (a fresh one takes
about 5 s, and the next session reuses it); its data lives in the OSD's memory, so tests delete their
buckets. By hand:

    .venv/bin/python -m tests.support.rgw start   # prints the `export` lines of the endpoint and keys
    .venv/bin/python -m tests.support.rgw stop

The fixtures: `rgw` (session) is the gateway; `rgw_s3` (module) is it with its keys in the environment,
as `s3_server` is moto's; `s3_endpoint` (module, parametrized) is each of them in turn, for the tests
that hold on both. A test that cannot have RGW skips with the reason, and fails under CI=true.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import pytest
from botocore.retries.standard import ExponentialBackoff

from edcrm.storage.s3 import client_config
from tests.support.s3_server import AWS_ENV, free_port
from tests.support.services import service_unavailable

BASE = Path(os.environ.get("EDCRM_RGW_DIR", "/tmp/edcrm-test-rgw"))
#: The gateway's S3 user (made at each fresh start): fixed, since they only open a loopback test cluster.
ACCESS_KEY = "edcrm-test-access"
SECRET_KEY = "edcrm-test-secret"
#: memstore's cap on what the OSD holds in memory (it takes only what objects use).
MEMSTORE_BYTES = int(os.environ.get("EDCRM_RGW_MEMSTORE_BYTES", 8 * 1024**3))
PACKAGES = ("ceph-mon", "ceph-osd", "radosgw", "ceph-common")
COMMANDS = ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "monmaptool", "ceph")
DAEMONS = ("client.rgw.a", "osd.0", "mon.a")
#: The pools radosgw would otherwise create one by one as it first needs them (about 2 s each, at the
#: first bucket, object and multipart upload).
POOLS = (
    ".rgw.root",
    "default.rgw.log",
    "default.rgw.control",
    "default.rgw.meta",
    "default.rgw.buckets.index",
    "default.rgw.buckets.data",
    "default.rgw.buckets.non-ec",
)
START_TIMEOUT = 120.0


class RgwUnavailable(Exception):
    """RGW cannot run here; the message says why."""


@dataclass
class RgwServer:
    """A running gateway: its endpoint and the keys of its S3 user."""

    endpoint_url: str
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    base: Path = BASE
    name: str = "rgw"
    _client: object = field(default=None, repr=False)

    @property
    def aws_env(self) -> dict[str, str]:
        """The AWS variables a process needs to use the gateway (no session token: RGW would look it up
        in its STS and refuse the request)."""
        env = {k: v for k, v in AWS_ENV.items() if k != "AWS_SESSION_TOKEN"}
        env.update(AWS_ACCESS_KEY_ID=self.access_key, AWS_SECRET_ACCESS_KEY=self.secret_key)
        return env

    @property
    def conf(self) -> Path:
        return self.base / "ceph.conf"

    def client(self):
        """A plain boto3 client on the gateway for a test's own setup and checks (one per server)."""
        if self._client is None:
            self._client = boto3.session.Session().client(
                "s3",
                endpoint_url=self.endpoint_url,
                aws_access_key_id=self.access_key,
                aws_secret_access_key=self.secret_key,
                region_name="us-east-1",
                config=client_config(),
            )
        return self._client

    def create_bucket(self, name: str | None = None) -> str:
        """A new bucket, a fresh name per test by default (the cluster outlives every test)."""
        name = name or f"edcrm-test-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def delete_bucket(self, name: str) -> None:
        """The bucket with its objects and unfinished multipart uploads: memstore keeps them in memory."""
        client = self.client()
        for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=name):
            for upload in page.get("Uploads", []):
                client.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=name, Delete={"Objects": keys, "Quiet": True})
        client.delete_bucket(Bucket=name)

    def answers(self) -> bool:
        return _answers(self.endpoint_url)

    def export_lines(self) -> str:
        env = {"AWS_ENDPOINT_URL": self.endpoint_url, "S3_ENDPOINT_URL": self.endpoint_url, **self.aws_env}
        return "\n".join(f"export {name}={value}" for name, value in env.items())


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/", timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # it answers, if only to refuse
    except (urllib.error.URLError, OSError):
        return False


def _pid_alive(path: Path) -> bool:
    try:
        os.kill(int(path.read_text().strip()), 0)
    except (OSError, ValueError):
        return False
    return True


# -- packages ---------------------------------------------------------------------------------------------


def missing_commands() -> list[str]:
    return [name for name in COMMANDS if shutil.which(name) is None]


def install_packages() -> None:
    """Debian's Ceph packages, when a daemon is missing and this user may install them (else the reason)."""
    if not missing_commands():
        return
    if os.geteuid() == 0:
        as_root: list[str] = []
    elif shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0:
        as_root = ["sudo", "-n"]
    else:
        raise RgwUnavailable(
            f"{', '.join(missing_commands())} missing, and installing {' '.join(PACKAGES)} needs root "
            "or passwordless sudo"
        )
    if shutil.which("apt-get") is None:
        raise RgwUnavailable(f"{', '.join(missing_commands())} missing, and no apt-get to install Debian's")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = [*as_root, "apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    print(f"rgw: installing {' '.join(PACKAGES)} (apt-get)", file=sys.stderr)
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run([*as_root, "apt-get", "update", "-q"], env=env, capture_output=True)
        done = subprocess.run(install, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise RgwUnavailable(f"apt-get install {' '.join(PACKAGES)} failed: {tail[0]}")
    if missing := missing_commands():
        raise RgwUnavailable(f"{', '.join(missing)} still missing after installing {' '.join(PACKAGES)}")


# -- the cluster --------------------------------------------------------------------------------------------

#: Run by the Python that runs Ceph's own `ceph` command (it has the `rados` module): one connection for
#: what would otherwise be a `ceph` process (a second or more each) per step.
_RADOS_SCRIPT = r"""
import json, sys, time
import rados

conf, action = sys.argv[1], sys.argv[2]
cluster = rados.Rados(conffile=conf)
cluster.connect(timeout=60)

def mon(prefix, **args):
    ret, out, err = cluster.mon_command(json.dumps({"prefix": prefix, "format": "json", **args}), b"")
    if ret != 0:
        sys.exit(f"{prefix} {args}: {ret} {err}")
    return json.loads(out) if out else None

if action == "osd-new":
    print(mon("osd new", uuid=sys.argv[3])["osdid"])  # the OSD's id
elif action == "pools":
    deadline = time.monotonic() + 60
    while mon("osd stat").get("num_up_osds", 0) < 1:
        if time.monotonic() > deadline:
            sys.exit("osd.0 did not come up")
        time.sleep(0.2)
    for pool in sys.argv[3:]:
        mon("osd pool create", pool=pool, pg_num=8, pgp_num=8)
        mon("osd pool application enable", pool=pool, app="rgw")
cluster.shutdown()
"""


def _ceph_python() -> str:
    """The interpreter of Ceph's `ceph` command (a Python script importing the `rados` module)."""
    ceph = shutil.which("ceph")
    assert ceph is not None
    with open(ceph, "rb") as script:
        first = script.readline().decode(errors="replace")
    return first[2:].strip().split()[0] if first.startswith("#!") else "/usr/bin/python3"


def _conf(data: Path, fsid: str, port: int, mon_port: int, mon_v2_port: int) -> str:
    return f"""[global]
fsid = {fsid}
mon initial members = a
mon host = [v2:127.0.0.1:{mon_v2_port},v1:127.0.0.1:{mon_port}]
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv6 = false
auth cluster required = none
auth service required = none
auth client required = none
# radosgw defaults to ms_mon_client_mode=secure, which auth=none cannot do over msgr2
ms mon client mode = crc
ms client mode = crc
auth allow insecure global id reclaim = true
mon warn on insecure global id reclaim allowed = false
mon warn on insecure global id reclaim = false
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon allow pool delete = true
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon max pg per osd = 1000
mon warn on pool no redundancy = false
run dir = {data}/run
admin socket = {data}/run/$name.asok
pid file = {data}/run/$name.pid
log file = {data}/log/$name.log
keyring = {data}/keyring
crash dir = {data}/crash
exporter sock dir = {data}/run

[mon]
# commit map changes every 0.1 s (1 s by default): pools and the first bucket come sooner
paxos propose interval = 0.1
mon data = {data}/mon/$cluster-$id
mon data avail warn = 1
mon data avail crit = 0

[osd]
osd data = {data}/osd/$cluster-$id
osd objectstore = memstore
memstore device bytes = {MEMSTORE_BYTES}
osd max object name len = 460
osd max object namespace len = 64

[client.rgw.a]
rgw data = {data}/rgw
rgw frontends = beast endpoint=127.0.0.1:{port} tcp_nodelay=1
rgw dns name = 127.0.0.1
rgw enable usage log = false
# memstore holds everything in the OSD's memory: reclaim deleted object data after 30 s, not 2 h
rgw gc obj min wait = 30
rgw gc processor period = 30
"""


def _run(argv: list[str], what: str, timeout: float = 60) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise RgwUnavailable(f"{what} took more than {timeout:.0f} s") from None
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip()[-800:]
        raise RgwUnavailable(f"{what} failed ({done.returncode}): {detail}")
    return done.stdout


def running(base: Path = BASE) -> RgwServer | None:
    """The gateway of base, when its three daemons are alive and it answers."""
    try:
        state = json.loads((base / "state.json").read_text())
    except (OSError, ValueError):
        return None
    run = base / "data" / "run"
    if not all(_pid_alive(run / f"{name}.pid") for name in DAEMONS):
        return None
    server = RgwServer(state["endpoint_url"], state["access_key"], state["secret_key"], base=base)
    return server if server.answers() else None


def stop(base: Path = BASE) -> None:
    """Stop base's daemons by their pid files (SIGTERM, then SIGKILL after 10 s)."""
    run = base / "data" / "run"
    for name in DAEMONS:
        path = run / f"{name}.pid"
        if not _pid_alive(path):
            path.unlink(missing_ok=True)
            continue
        pid = int(path.read_text().strip())
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while _pid_alive(path) and time.monotonic() < deadline:
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            if _pid_alive(path):
                os.kill(pid, signal.SIGKILL)
        path.unlink(missing_ok=True)
    (base / "state.json").unlink(missing_ok=True)


def start(base: Path = BASE) -> RgwServer:
    """A fresh one-node cluster in base (what was there is stopped and wiped), its pools made and its S3
    user created, on free loopback ports."""
    install_packages()
    stop(base)
    data = base / "data"
    shutil.rmtree(data, ignore_errors=True)
    for folder in ("run", "log", "crash", "mon/ceph-a", "osd/ceph-0", "rgw"):
        (data / folder).mkdir(parents=True)
    (data / "keyring").write_text("")
    port, mon_port, mon_v2_port = free_port(), free_port(), free_port()
    fsid = str(uuid.uuid4())
    conf = base / "ceph.conf"
    conf.write_text(_conf(data, fsid, port, mon_port, mon_v2_port))
    c = ["-c", str(conf)]
    monmap = str(data / "monmap")
    mon_addr = f"[v2:127.0.0.1:{mon_v2_port},v1:127.0.0.1:{mon_port}]"
    _run(["monmaptool", "--create", "--fsid", fsid, "--addv", "a", mon_addr, monmap], "monmaptool")
    _run(["ceph-mon", *c, "--mkfs", "-i", "a", "--monmap", monmap], "ceph-mon --mkfs")
    _run(["ceph-mon", *c, "-i", "a"], "ceph-mon")  # daemonizes once it listens
    python = _ceph_python()
    osd_uuid = str(uuid.uuid4())
    osd_id = _run([python, "-c", _RADOS_SCRIPT, str(conf), "osd-new", osd_uuid], "osd new").strip()
    _run(["ceph-osd", *c, "-i", osd_id, "--mkfs", "--osd-uuid", osd_uuid], "ceph-osd --mkfs")
    _run(["ceph-osd", *c, "-i", osd_id], "ceph-osd")
    _run([python, "-c", _RADOS_SCRIPT, str(conf), "pools", *POOLS], "creating the pools", timeout=90)
    _run(["radosgw", *c, "-n", "client.rgw.a"], "radosgw")
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT
    while not _answers(endpoint):
        if time.monotonic() > deadline or not _pid_alive(data / "run" / "client.rgw.a.pid"):
            raise RgwUnavailable(f"radosgw does not answer on {endpoint}; see {data}/log/client.rgw.a.log")
        time.sleep(0.2)
    _run(
        [
            "radosgw-admin",
            *c,
            "user",
            "create",
            "--uid=edcrm-test",
            "--display-name=edcrm tests",
            f"--access-key={ACCESS_KEY}",
            f"--secret-key={SECRET_KEY}",
        ],
        "radosgw-admin user create",
    )
    server = RgwServer(endpoint, base=base)
    state = {"endpoint_url": endpoint, "access_key": ACCESS_KEY, "secret_key": SECRET_KEY}
    (base / "state.json").write_text(json.dumps(state))
    return server


@contextlib.contextmanager
def _locked(base: Path) -> Iterator[None]:
    base.mkdir(parents=True, exist_ok=True)
    with open(base / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one process starts it; the others then find it running
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_rgw(base: Path = BASE) -> tuple[RgwServer, bool]:
    """The running gateway of base, or a fresh one; and whether this call started it."""
    with _locked(base):
        server = running(base)
        if server is not None:
            return server, False
        return start(base), True


# -- fixtures ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def rgw() -> RgwServer:
    """The gateway, started (and its packages installed) when none is running; left running afterwards."""
    try:
        server, _ = ensure_rgw()
    except RgwUnavailable as exc:
        service_unavailable("Ceph RGW", str(exc))
    return server


@contextlib.contextmanager
def _s3_environment(aws_env: dict[str, str]) -> Iterator[None]:
    """aws_env in os.environ (no session token unless it has one), and botocore's retries without their
    backoff sleeps, for the block."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
        monkeypatch.delenv("AWS_PROFILE", raising=False)
        for name, value in aws_env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0)
        yield


@pytest.fixture(scope="module")
def rgw_s3(rgw):
    """The gateway, with its keys in this module's environment (as s3_server does for moto's)."""
    with _s3_environment(rgw.aws_env):
        yield rgw


@pytest.fixture(scope="module", params=["moto", "rgw"])
def s3_endpoint(request):
    """moto's S3 server, then Ceph RGW: each with its keys in the environment, and the same interface
    (`name`, `endpoint_url`, `aws_env`, `client()`, `create_bucket()`)."""
    if request.param == "moto":
        server = request.getfixturevalue("s3_server")
    else:
        server = request.getfixturevalue("rgw")
    with _s3_environment(server.aws_env):
        yield server


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "start"
    if command == "start":
        try:
            server, started = ensure_rgw()
        except RgwUnavailable as exc:
            print(f"rgw: {exc}", file=sys.stderr)
            return 1
        print(f"rgw: {'started' if started else 'already running'} on {server.endpoint_url}", file=sys.stderr)
        print(server.export_lines())
        return 0
    if command == "stop":
        with _locked(BASE):
            stop(BASE)
        return 0
    print("usage: python -m tests.support.rgw [start|stop]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
