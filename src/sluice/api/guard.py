"""Cross-site request and DNS-rebinding guard of keyless (loopback-only) mode.

Without API keys the API trusts every loopback client, and a web page in the user's browser
is one: it can send requests to ``127.0.0.1`` (cross-site request forgery), or have its own
host name resolve to ``127.0.0.1`` and then read the answers (DNS rebinding). So, while no
keys are configured:

* the ``Host`` header must name a loopback address (``localhost``, ``127.0.0.1``,
  ``[::1]``, any port), which a rebound name never does;
* a ``POST``/``PUT``/``PATCH``/``DELETE`` with an ``Origin`` header must come from the same
  origin (browsers send ``Origin`` with every such request; curl and scripts send none);
* such a request must not carry one of the content types a browser may send across sites
  without asking first (``text/plain``, ``application/x-www-form-urlencoded``,
  ``multipart/form-data``): send ``application/json`` or ``application/x-ndjson``. The
  exceptions are ``/api/v1/predict`` and ``/api/v1/query``, which change nothing and keep
  accepting the form-encoded body ``curl -d`` sends (a foreign ``Origin`` is still refused).

Refusals are ``403`` with the usual JSON error body. With API keys configured, keys decide.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from sluice.api.auth import is_loopback
from sluice.api.errors import error_response

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CROSS_SITE_TYPES = frozenset(
    {"text/plain", "application/x-www-form-urlencoded", "multipart/form-data"}
)
SIDE_EFFECT_FREE = frozenset({"/api/v1/predict", "/api/v1/query"})
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _host_port(netloc: str, scheme: str) -> tuple[str, int | None] | None:
    """``(host, port)`` of ``netloc`` (the scheme's default port filled in), None if invalid."""
    try:
        parts = urlsplit(f"//{netloc}")
        port = parts.port
    except ValueError:
        return None
    host = (parts.hostname or "").rstrip(".")
    return (host, port or _DEFAULT_PORTS.get(scheme)) if host else None


def refusal(scope: Scope) -> tuple[str, dict[str, str]] | None:
    """Why a keyless-mode request must be refused (message, detail), or None to let it in."""
    headers = Headers(scope=scope)
    host = headers.get("host")
    served = _host_port(host, scope.get("scheme", "http")) if host is not None else None
    if host is not None and (served is None or not is_loopback(served[0])):
        return (
            "without API keys the API answers only requests addressed to localhost, "
            "127.0.0.1 or [::1] (the Host header names another machine)",
            {"host": host},
        )
    if scope["method"] not in UNSAFE_METHODS:
        return None
    origin = headers.get("origin")
    if origin is not None:
        parts = urlsplit(origin)
        if served is None or _host_port(parts.netloc, parts.scheme) != served:
            return (
                "without API keys, requests from another origin (a web page) may not "
                "change anything; use an API key",
                {"origin": origin},
            )
    kind = headers.get("content-type", "").partition(";")[0].strip().lower()
    if kind in CROSS_SITE_TYPES and scope["path"] not in SIDE_EFFECT_FREE:
        return (
            f"without API keys, a {scope['method']} with Content-Type {kind!r} is refused "
            "(a web page can send that type); send Content-Type: application/json, or "
            "application/x-ndjson for NDJSON, or use an API key",
            {"content_type": kind},
        )
    return None


class KeylessGuard:
    """ASGI middleware applying :func:`refusal` while no API keys are configured."""

    def __init__(self, app: ASGIApp, keys_configured: Callable[[], bool]) -> None:
        self.app = app
        self.keys_configured = keys_configured

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer 403 to a refused request; pass every other one on."""
        if scope["type"] == "http" and not self.keys_configured():
            refused = refusal(scope)
            if refused is not None:
                await error_response(403, *refused)(scope, receive, send)
                return
        await self.app(scope, receive, send)
