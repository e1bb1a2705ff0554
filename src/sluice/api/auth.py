"""API keys and roles: ``read`` < ``write`` < ``admin``; keys are only ever kept hashed.

Keys come from ``SLUICE_API_KEYS`` (``key:role,key2:role``; hashed on load) or a keys file
named by ``SLUICE_API_KEYS_FILE`` holding ``sha256-hex:role`` lines (``hash_key`` makes
them; ``#`` starts a comment). Clients send ``Authorization: Bearer KEY`` or
``X-API-Key: KEY``. With no keys configured, only loopback clients are served, and
``check_bind`` refuses to listen on any other address.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import math
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Request

from sluice.api.errors import ApiError
from sluice.core.errors import ConfigError

ROLES = {"read": 1, "write": 2, "admin": 3}
MIN_KEY_LENGTH = 16  # what `sluice api hash-key` accepts
_HEX64 = frozenset("0123456789abcdef")


def hash_key(key: str) -> str:
    """SHA-256 hex digest of an API key (what a keys file stores)."""
    return hashlib.sha256(key.encode()).hexdigest()


def keys_file_line(key: str, role: str) -> str:
    """The keys-file line ``sha256-hex:role`` of ``key`` (at least MIN_KEY_LENGTH characters)."""
    if len(key) < MIN_KEY_LENGTH:
        raise ConfigError(
            f"the key has {len(key)} characters; use at least {MIN_KEY_LENGTH} "
            "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )
    return f"{hash_key(key)}:{_check_role(role, 'role')}"


def _check_role(role: str, where: str) -> str:
    role = role.strip().lower()
    if role not in ROLES:
        raise ConfigError(f"unknown role {role!r}; expected read, write or admin", file=where)
    return role


@dataclass(frozen=True)
class ApiKeys:
    """Hashed API keys and their roles; empty means no keys are configured."""

    roles_by_hash: Mapping[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.roles_by_hash)

    @classmethod
    def from_pairs(cls, text: str) -> ApiKeys:
        """Parse ``key:role,key2:role`` (plain keys, hashed at once)."""
        roles: dict[str, str] = {}
        for number, item in enumerate(filter(None, (p.strip() for p in text.split(","))), 1):
            key, sep, role = item.rpartition(":")
            if not sep or not key:
                raise ConfigError(f"entry {number} must look like KEY:ROLE", file="SLUICE_API_KEYS")
            roles[hash_key(key)] = _check_role(role, "SLUICE_API_KEYS")
        return cls(roles)

    @classmethod
    def from_file(cls, path: str | Path) -> ApiKeys:
        """Parse a keys file of ``sha256-hex:role`` lines."""
        roles: dict[str, str] = {}
        lines = Path(path).read_text().splitlines()
        for number, raw in enumerate(lines, 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            digest, sep, role = line.partition(":")
            digest = digest.strip().lower()
            if not sep or len(digest) != 64 or not set(digest) <= _HEX64:
                raise ConfigError(
                    "expected SHA256-HEX:ROLE (make the hash with `sluice api hash-key`)",
                    file=str(path),
                    line=number,
                )
            roles[digest] = _check_role(role, f"{path}:{number}")
        return cls(roles)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ApiKeys:
        """Keys from ``SLUICE_API_KEYS`` and ``SLUICE_API_KEYS_FILE`` (both may be set)."""
        env = os.environ if env is None else env
        roles: dict[str, str] = {}
        if env.get("SLUICE_API_KEYS_FILE"):
            roles.update(cls.from_file(env["SLUICE_API_KEYS_FILE"]).roles_by_hash)
        if env.get("SLUICE_API_KEYS"):
            roles.update(cls.from_pairs(env["SLUICE_API_KEYS"]).roles_by_hash)
        return cls(roles)

    def role_of(self, key: str) -> str | None:
        """The role of ``key``, or None when it is not a configured key."""
        return self.roles_by_hash.get(hash_key(key))


@functools.lru_cache(maxsize=1024)
def is_loopback(host: str | None) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ::1."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, keys: ApiKeys) -> None:
    """Refuse to serve a non-loopback address without API keys (raises ConfigError)."""
    if not keys and not is_loopback(host):
        raise ConfigError(
            f"refusing to listen on {host}: without API keys the API may only bind to "
            "127.0.0.1 or ::1. Set SLUICE_API_KEYS=key:role[,...] or SLUICE_API_KEYS_FILE "
            "(roles: read, write, admin), or bind to 127.0.0.1"
        )


class AuthThrottle:
    """Failed key checks per client address: a token bucket of ``per_minute`` tokens.

    Each invalid key takes a token; with none left, that client's keyed requests get
    ``429`` until the bucket refills (so keys cannot be guessed quickly). ``per_minute=0``
    turns throttling off. Runs on the event loop only, so it needs no lock.
    """

    def __init__(
        self,
        per_minute: int,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = 10_000,
    ) -> None:
        self.capacity, self.rate = float(per_minute), per_minute / 60.0
        self.clock, self.max_clients = clock, max_clients
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, when)

    def _tokens(self, client: str) -> float:
        tokens, when = self._buckets.get(client, (self.capacity, 0.0))
        return min(self.capacity, tokens + (self.clock() - when) * self.rate)

    def wait(self, client: str) -> float:
        """Seconds ``client`` must wait before its next key check (0 when it may go now)."""
        if not self.rate or client not in self._buckets:
            return 0.0
        return max(0.0, (1.0 - self._tokens(client)) / self.rate)

    def failed(self, client: str) -> None:
        """Record an invalid key from ``client``."""
        if not self.rate:
            return
        tokens = self._tokens(client) - 1.0
        self._buckets.pop(client, None)
        self._buckets[client] = (tokens, self.clock())
        if len(self._buckets) > self.max_clients:  # forget the longest-quiet half
            for quiet in list(self._buckets)[: self.max_clients // 2]:
                del self._buckets[quiet]


def presented_key(request: Request) -> str | None:
    """The key sent as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``."""
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-api-key") or None


def require_role(role: str) -> Callable[[Request], Awaitable[None]]:
    """A FastAPI dependency that lets a request through only with at least ``role``."""
    needed = ROLES[role]

    async def dependency(request: Request) -> None:
        keys: ApiKeys = request.app.state.sluice.keys
        if not keys:
            client = request.client.host if request.client else None
            if not is_loopback(client):
                raise ApiError(
                    403,
                    "API keys are not configured, so only loopback clients are served",
                    {"client": client},
                )
            return
        key = presented_key(request)
        if key is None:
            raise ApiError(
                401,
                "missing API key",
                {
                    "required_role": role,
                    "how": "send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
                },
                headers={"WWW-Authenticate": "Bearer"},
            )
        throttle: AuthThrottle = request.app.state.sluice.auth_throttle
        client = request.client.host if request.client else ""
        wait = math.ceil(throttle.wait(client))
        if wait:
            raise ApiError(
                429,
                "too many invalid API keys from this address; retry later",
                {"retry_after_seconds": wait},
                headers={"Retry-After": str(wait)},
            )
        have = keys.role_of(key)
        if have is None:
            throttle.failed(client)
            raise ApiError(
                401,
                "invalid API key",
                {"required_role": role},
                headers={"WWW-Authenticate": "Bearer"},
            )
        if ROLES[have] < needed:
            raise ApiError(
                403,
                f"this endpoint needs the {role!r} role; the key has {have!r}",
                {"required_role": role, "key_role": have},
            )

    return dependency


read_access = require_role("read")
write_access = require_role("write")
admin_access = require_role("admin")
