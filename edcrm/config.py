"""Configuration from the environment (twelve-factor), with the embedded defaults.

Every variable the app runs on is read here and nowhere else, into the app's configuration, so the
web process, the workers, the scheduler and the CLI agree on what they run against. (The server's own
settings, HOST, PORT, WEB_CONCURRENCY and WEB_THREADS, are gunicorn.conf.py's; botocore reads the AWS
credentials itself.)
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

#: The repository root: the embedded mode keeps its database under instance/ and files under storage/.
PROJECT_ROOT = Path(__file__).resolve().parent.parent

MIB = 1024 * 1024

#: Queues and their worker concurrency (threads), as the Procfile and the embedded mode run them.
QUEUES: dict[str, int] = {"default": 10, "csv_import": 5, "recordings": 3}


class ConfigError(ValueError):
    """A configuration value is missing or malformed."""


def env_int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def database_url(raw: str | None, instance_path: Path) -> str:
    """The SQLAlchemy URL: PostgreSQL URLs are pinned to psycopg 3; unset means SQLite under instance/."""
    if not raw:
        return f"sqlite:///{instance_path / 'edcrm.sqlite3'}"
    for prefix in ("postgres://", "postgresql://"):
        if raw.startswith(prefix):
            return "postgresql+psycopg://" + raw[len(prefix) :]
    return raw


def secret_key(instance_path: Path) -> str:
    """A key generated once and kept in instance/, so sessions survive restarts."""
    path = instance_path / "secret_key"
    if path.exists():
        return path.read_text().strip()
    instance_path.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    # O_EXCL: two processes starting together must end up with one key, not two.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(key)
    return key


#: The shortest METRICS_TOKEN accepted: it guards /metrics with no user behind it.
MIN_METRICS_TOKEN_LENGTH = 16


def metrics_token(raw: str | None) -> str | None:
    """The bearer token that Prometheus sends to /metrics; unset: nothing opens it, not even an admin's
    API token (edcrm.auth.metrics_auth)."""
    token = (raw or "").strip()
    if not token:
        return None
    if len(token) < MIN_METRICS_TOKEN_LENGTH:
        raise ConfigError(f"METRICS_TOKEN must be at least {MIN_METRICS_TOKEN_LENGTH} characters long")
    return token


def body_timeout_s(env: Mapping[str, str]) -> int:
    """BODY_TIMEOUT_S: the longest a client may go without sending a byte of its request (head or body)
    before it is cut off. gunicorn.conf.py's worker reads it too, for the bytes it reads itself."""
    return env_int(env, "BODY_TIMEOUT_S", 30, minimum=1)


#: The smallest part S3 takes (all but the last part of a multipart upload).
MIN_TUS_PART_BYTES = 5 * MIB


def cors_origins(raw: str | None) -> tuple[str, ...]:
    """CORS_ORIGINS: the web origins (`https://app.example.com`, comma-separated) whose pages may call
    /api/ (edcrm.routes.cors); `*` for any. Unset: none, the API is same-origin only."""
    origins = []
    for item in (raw or "").split(","):
        origin = item.strip().rstrip("/").lower()
        if not origin:
            continue
        if origin != "*":
            scheme, _, host = origin.partition("://")
            if scheme not in ("http", "https") or not host or "/" in host:
                raise ConfigError(
                    f"CORS_ORIGINS holds {item.strip()!r}, which is no origin like https://host"
                )
        origins.append(origin)
    return tuple(origins)


def instance_path(env: Mapping[str, str], overrides: Mapping | None = None) -> Path:
    """EDCRM_INSTANCE_PATH: where the embedded mode keeps its database, its secret key and its state;
    the repository's instance/ unless set (an override of the same name wins, for tests)."""
    raw = (overrides or {}).get("EDCRM_INSTANCE_PATH") or env.get("EDCRM_INSTANCE_PATH")
    return Path(raw) if raw else PROJECT_ROOT / "instance"


def from_env(env: Mapping[str, str], instance_path: Path, overrides: Mapping | None = None) -> dict:
    """The app's configuration for this environment, with overrides (tests) applied on top."""
    overrides = overrides or {}
    min_backoff = env_int(env, "JOB_MIN_BACKOFF_MS", 15_000, minimum=1)
    max_backoff = env_int(env, "JOB_MAX_BACKOFF_MS", 600_000, minimum=1)
    if max_backoff < min_backoff:
        raise ConfigError("JOB_MAX_BACKOFF_MS must not be below JOB_MIN_BACKOFF_MS")
    return {
        "EDCRM_INSTANCE_PATH": str(instance_path),
        "SQLALCHEMY_DATABASE_URI": database_url(env.get("DATABASE_URL"), instance_path),
        "REDIS_URL": env.get("REDIS_URL") or None,
        "STORAGE_URL": env.get("STORAGE_URL") or (PROJECT_ROOT / "storage").as_uri(),
        "S3_ENDPOINT_URL": env.get("S3_ENDPOINT_URL") or None,
        # botocore itself reads only AWS_DEFAULT_REGION (and the credentials); the contract names AWS_REGION.
        "AWS_REGION": env.get("AWS_REGION") or None,
        "SECRET_KEY": overrides.get("SECRET_KEY") or env.get("SECRET_KEY") or secret_key(instance_path),
        "MAX_CSV_BYTES": env_int(env, "MAX_CSV_BYTES", 50 * MIB, minimum=1),
        "MAX_RECORDING_BYTES": env_int(env, "MAX_RECORDING_BYTES", 500 * MIB, minimum=1),
        "MAX_CHUNK_BYTES": env_int(env, "MAX_CHUNK_BYTES", 16 * MIB, minimum=1),
        "JOB_MIN_BACKOFF_MS": min_backoff,
        "JOB_MAX_BACKOFF_MS": max_backoff,
        # A Redis worker that dies leaves its unacked messages to be redelivered once its heartbeat is
        # older than the timeout, by the maintenance that a random share of broker commands (per
        # million) runs. Dramatiq's defaults.
        "BROKER_HEARTBEAT_TIMEOUT_MS": env_int(env, "BROKER_HEARTBEAT_TIMEOUT_MS", 60_000, minimum=1),
        "BROKER_MAINTENANCE_PER_MILLION": env_int(env, "BROKER_MAINTENANCE_PER_MILLION", 1_000),
        "JOB_RETENTION_DAYS": env_int(env, "JOB_RETENTION_DAYS", 7, minimum=1),
        "FAILED_JOB_RETENTION_DAYS": env_int(env, "FAILED_JOB_RETENTION_DAYS", 30, minimum=1),
        "UPLOAD_SESSION_TTL_HOURS": env_int(env, "UPLOAD_SESSION_TTL_HOURS", 24, minimum=1),
        # tus uploads (edcrm.routes.tus): how long one lives without a PATCH, and its part size (raised
        # where needed so that 10,000 parts reach MAX_RECORDING_BYTES).
        "TUS_UPLOAD_TTL_HOURS": env_int(env, "TUS_UPLOAD_TTL_HOURS", 24, minimum=1),
        "TUS_PART_BYTES": env_int(env, "TUS_PART_BYTES", 8 * MIB, minimum=MIN_TUS_PART_BYTES),
        "CORS_ORIGINS": cors_origins(env.get("CORS_ORIGINS")),
        "BODY_TIMEOUT_S": body_timeout_s(env),
        "METRICS_TOKEN": metrics_token(env.get("METRICS_TOKEN")),
        "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True},
        "WTF_CSRF_TIME_LIMIT": None,
        "SESSION_COOKIE_SAMESITE": "Lax",
        # Behind HTTPS in production: SESSION_COOKIE_SECURE=true keeps the cookies off plain HTTP.
        "SESSION_COOKIE_SECURE": env.get("SESSION_COOKIE_SECURE", "").lower() == "true",
        "REMEMBER_COOKIE_SECURE": env.get("SESSION_COOKIE_SECURE", "").lower() == "true",
        "REMEMBER_COOKIE_SAMESITE": "Lax",
        "REMEMBER_COOKIE_HTTPONLY": True,
        # "Remember me" keeps a phone or a shared office PC signed in for a month, not Flask-Login's year.
        "REMEMBER_COOKIE_DURATION": timedelta(days=30),
        # Failed sign-ins per email and per client address (edcrm.login_limit), counted where every web
        # process sees the same counts: Redis when there is one, else this process's memory.
        "LOGIN_RATE_LIMIT": (env.get("LOGIN_RATE_LIMIT") or "").strip() or "10 per 5 minutes",
        "RATELIMIT_STORAGE_URI": env.get("REDIS_URL") or "memory://",
        "RATELIMIT_STRATEGY": "moving-window",
        # Proxies in front of the web that append the client's address to X-Forwarded-For (0: none, the
        # connection's address is the client's).
        "TRUSTED_PROXIES": env_int(env, "TRUSTED_PROXIES", 0),
    } | dict(overrides)
