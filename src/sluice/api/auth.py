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
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Request

from sluice.api.errors import ApiError
from sluice.core.errors import ConfigError

ROLES = {"read": 1, "write": 2, "admin": 3}
_HEX64 = frozenset("0123456789abcdef")


def hash_key(key: str) -> str:
    """SHA-256 hex digest of an API key (what a keys file stores)."""
    return hashlib.sha256(key.encode()).hexdigest()


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
        have = keys.role_of(key)
        if have is None:
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
