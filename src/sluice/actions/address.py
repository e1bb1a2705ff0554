"""Which addresses HTTP actions (webhook, slack, airflow) may call: deny and allow lists.

``SLUICE_WEBHOOK_DENY`` (default ``169.254.0.0/16,fe80::/10``: link-local, where cloud
metadata services answer) and ``SLUICE_WEBHOOK_ALLOW`` (default empty: anything not denied)
are comma-separated IP networks, addresses or host names (``*.example.com`` matches
sub-domains); ``none`` empties a list. A target is refused when its host name or any address
it resolves to is denied, or, with an allow list, when its name is not allowed and not every
address it resolves to is. Checked at each delivery against the addresses the name resolves
to then; a refused delivery fails permanently with the reason.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from sluice.core.errors import ConfigError, PermanentActionError, TransientActionError

DEFAULT_DENY = "169.254.0.0/16,fe80::/10"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class AddressList:
    """IP networks and host names (exact, or ``*.suffix``) read from one variable."""

    networks: tuple[Network, ...] = ()
    names: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str, variable: str) -> AddressList:
        """Parse ``a,b,c``; ``none`` (or nothing) is the empty list."""
        networks: list[Network] = []
        names: list[str] = []
        for entry in (e.strip().lower() for e in text.split(",")):
            if entry in ("", "none"):
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                if not entry.removeprefix("*.").replace("-", "").replace(".", "").isalnum():
                    raise ConfigError(
                        f"{entry!r} is neither an IP network nor a host name", file=variable
                    ) from None
                names.append(entry)
        return cls(tuple(networks), tuple(names))

    def __bool__(self) -> bool:
        return bool(self.networks or self.names)

    def has_name(self, host: str) -> bool:
        """Whether ``host`` is one of the names (or under a ``*.`` one)."""
        return any(host == n or (n.startswith("*.") and host.endswith(n[1:])) for n in self.names)

    def has_address(self, address: Address) -> bool:
        """Whether ``address`` (or the IPv4 address it maps) is in one of the networks."""
        mapped = getattr(address, "ipv4_mapped", None)
        return any(a in n for a in (address, mapped) if a is not None for n in self.networks)


@dataclass(frozen=True)
class AddressPolicy:
    """The deny and allow lists HTTP actions check their target against."""

    deny: AddressList
    allow: AddressList

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AddressPolicy:
        """Lists from ``SLUICE_WEBHOOK_DENY`` and ``SLUICE_WEBHOOK_ALLOW``."""
        env = os.environ if env is None else env
        return cls(
            AddressList.parse(env.get("SLUICE_WEBHOOK_DENY", DEFAULT_DENY), "SLUICE_WEBHOOK_DENY"),
            AddressList.parse(env.get("SLUICE_WEBHOOK_ALLOW", ""), "SLUICE_WEBHOOK_ALLOW"),
        )

    def check(self, url: str, where: str) -> None:
        """Raise PermanentActionError when ``url`` (shown as ``where``) may not be called."""
        parts = urlsplit(url)
        host = (parts.hostname or "").rstrip(".").lower()
        if not host:
            return  # not a URL the client can call; it says so itself
        if self.deny.has_name(host):
            raise PermanentActionError(f"{where}: host {host!r} is in SLUICE_WEBHOOK_DENY")
        addresses = _resolve(host, parts.port, where)
        denied = next((a for a in addresses if self.deny.has_address(a)), None)
        if denied is not None:
            raise PermanentActionError(
                f"{where}: address {denied} is in SLUICE_WEBHOOK_DENY "
                f"(default {DEFAULT_DENY}: link-local, where cloud metadata services answer)"
            )
        if self.allow and not self.allow.has_name(host):
            outside = next((a for a in addresses if not self.allow.has_address(a)), None)
            if outside is not None:
                raise PermanentActionError(
                    f"{where}: address {outside} of {host!r} is not in SLUICE_WEBHOOK_ALLOW"
                )


def _resolve(host: str, port: int | None, where: str) -> list[Address]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port or 443, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise TransientActionError(f"cannot resolve {where}: {exc}") from None
    return [ipaddress.ip_address(str(info[4][0]).partition("%")[0]) for info in infos]
