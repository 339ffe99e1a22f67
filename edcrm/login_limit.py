"""Failed sign-ins, limited per email and per client address: LOGIN_RATE_LIMIT (default `10 per 5 minutes`).

The API's token route and the login form spend the same two budgets, so an attacker gets no more guesses
by switching between them. Only failures count: a user signing in right is never held back by how often
others do. Once either budget is spent, every attempt is refused with 429 until its oldest failure
leaves the window (Retry-After says when), the right password too: if it still passed, an attacker would
keep guessing and read the one 200 among the 429s. The price is that anyone can hold an email's sign-ins
up for one window by failing on purpose; the user's open sessions and API tokens keep working meanwhile.

The client address is the connection's (request.remote_addr), never a header the client writes
(X-Forwarded-For), unless TRUSTED_PROXIES says how many proxies in front of the web append to that
header: then it is the address the outermost of them saw (the N-th from the right), as werkzeug's
ProxyFix reads it; what the client wrote further left is ignored. Without it, behind a proxy every client
shares the proxy's budget. IPv6 addresses count per /64, the block one subscriber gets.

An attempt is checked before and counted after the password check, so requests in flight together (at
most the web's threads) may each get through before the first of them is counted.

The counts live in Flask-Limiter's storage (edcrm.extensions.limiter, RATELIMIT_STORAGE_URI): Redis when
REDIS_URL is set, shared by every web process and host, else the memory of the embedded mode's single
process. If Redis does not answer, this process's memory counts instead, so sign-ins are still limited
(per process) rather than all refused or all let through.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import math
import time
from dataclasses import dataclass

from flask import Flask, current_app, request
from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter, RateLimiter

from .auth import authenticate_password
from .config import ConfigError
from .extensions import limiter
from .models import User

log = logging.getLogger(__name__)

#: Before the budgets' names in the storage's keys: the storage may be the broker's Redis database.
KEY_PREFIX = "edcrm"
EXTENSION = "edcrm.login_limit"


class TooManySignIns(Exception):
    """The email or the client address has spent its budget of failed sign-ins."""

    def __init__(self, retry_after: int):
        message = "Too many failed sign-ins for this email or from this address"
        super().__init__(f"{message}: try again in {retry_after} seconds.")
        self.retry_after = retry_after


@dataclass
class _State:
    limit: RateLimitItem
    fallback: RateLimiter  # this process's memory, while the shared storage does not answer


def init_app(app: Flask) -> None:
    """Bind Flask-Limiter (its storage per the config) and read LOGIN_RATE_LIMIT."""
    raw = app.config["LOGIN_RATE_LIMIT"]
    try:
        parsed = parse_many(raw)
    except ValueError:
        parsed = []
    if len(parsed) != 1 or parsed[0].amount < 1:
        raise ConfigError(f"LOGIN_RATE_LIMIT must read like '10 per 5 minutes', got {raw!r}")
    # A Redis that does not answer holds a sign-in up for 2 s at most, then memory counts (below).
    app.config.setdefault("RATELIMIT_STORAGE_OPTIONS", {"socket_connect_timeout": 2, "socket_timeout": 2})
    limiter.init_app(app)
    app.extensions[EXTENSION] = _State(parsed[0], MovingWindowRateLimiter(MemoryStorage()))


def client_address() -> str:
    """The address a budget is kept for: the connection's (or, with TRUSTED_PROXIES, the one the proxies
    saw), an IPv6 one by its /64."""
    address = request.remote_addr or "unknown"
    hops = current_app.config["TRUSTED_PROXIES"]
    if hops:
        forwarded = [part.strip() for part in ",".join(request.headers.getlist("X-Forwarded-For")).split(",")]
        if len(forwarded) >= hops and forwarded[-hops]:
            address = forwarded[-hops]
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)


def _budgets(email: str) -> list[tuple[str, str, str]]:
    # The email by its digest: the storage's keys list no address that was tried.
    digest = hashlib.sha256(User.normalize_email(email).encode()).hexdigest()[:32]
    return [(KEY_PREFIX, "login-email", digest), (KEY_PREFIX, "login-address", client_address())]


def _storage_call(method: str, *args):
    """strategy.method(limit, *args) on the shared storage, or on this process's memory if it fails."""
    state: _State = current_app.extensions[EXTENSION]
    try:
        return getattr(limiter.limiter, method)(state.limit, *args)
    except limiter.storage.base_exceptions as exc:
        log.warning("login limit: the rate limit storage did not answer (%s); counting in memory", exc)
        return getattr(state.fallback, method)(state.limit, *args)


def check(email: str) -> None:
    """Raise TooManySignIns if email or this client has no failed sign-in left in the window."""
    for budget in _budgets(email):
        if not _storage_call("test", *budget):
            reset_at, _remaining = _storage_call("get_window_stats", *budget)
            raise TooManySignIns(max(1, math.ceil(reset_at - time.time())))


def count_failure(email: str) -> None:
    for budget in _budgets(email):
        _storage_call("hit", *budget)


def authenticate(email: str, password: str) -> User | None:
    """edcrm.auth.authenticate_password within the budgets: the user, None (counted as a failure), or
    TooManySignIns raised before the password is even checked."""
    check(email)
    user = authenticate_password(email, password)
    if user is None:
        count_failure(email)
    return user
