"""HTTP actions: ``webhook`` (JSON POST, signed) and ``slack`` (incoming-webhook format).

Header values, URLs and the signing secret may contain ``${VAR}``; it is resolved from
the environment at delivery time and never stored in the outbox or written to logs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import threading
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx
import orjson
from pydantic import Field, field_validator

from sluice.actions.address import AddressPolicy
from sluice.actions.base import (
    Action,
    ActionContext,
    Delivery,
    OptionsModel,
    redact,
    redact_url,
    resolve_secrets,
)
from sluice.core.errors import PermanentActionError, TransientActionError
from sluice.core.types import duration_us

SIGNATURE_HEADER = "X-Sluice-Signature"
# Headers Sluice sets itself; the values of all others are kept out of stored errors.
PUBLIC_HEADERS = frozenset(
    {"content-type", "idempotency-key", "x-sluice-action", SIGNATURE_HEADER.lower()}
)
RETRYABLE_STATUS = frozenset({408, 425, 429})


def _check_timeout(value: str | float) -> str | float:
    duration_us(value)
    return value


class HttpClient:
    """One keep-alive httpx client per action, created lazily, safe across threads.

    ``policy`` (``SLUICE_WEBHOOK_DENY``/``_ALLOW`` by default) says which addresses it may call.
    """

    def __init__(
        self, timeout: str | float, pool: int = 16, policy: AddressPolicy | None = None
    ) -> None:
        self.timeout = duration_us(timeout) / 1e6
        self.pool = pool
        self.policy = policy or AddressPolicy.from_env()
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    def get(self) -> httpx.Client:
        """The shared client."""
        with self._lock:
            if self._client is None:
                limits = httpx.Limits(
                    max_connections=self.pool, max_keepalive_connections=self.pool
                )
                self._client = httpx.Client(timeout=self.timeout, limits=limits)
            return self._client

    def close(self) -> None:
        """Close the connection pool."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


def send(
    http: HttpClient,
    method: str,
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    auth: tuple[str, str] | None = None,
    ok: frozenset[int] = frozenset(),
) -> None:
    """Send one request; map failures to Transient/PermanentActionError.

    The URL's path and query, header values (but Sluice's own) and credentials never appear
    in the error, even when the receiver echoes them back.
    """
    where = redact_url(url)
    secrets = _secrets(url, headers, auth)
    http.policy.check(url, where)
    try:
        response = http.get().request(method, url, content=body, headers=headers, auth=auth)
    except httpx.TimeoutException as exc:
        raise TransientActionError(f"timeout calling {where}: {type(exc).__name__}") from None
    except httpx.TransportError as exc:
        reason = redact(f"{type(exc).__name__}: {exc}", secrets)
        raise TransientActionError(f"cannot reach {where}: {reason}") from None
    status = response.status_code
    if 200 <= status < 300 or status in ok:
        return
    detail = redact(response.text[:20_000], secrets)[:300].replace("\n", " ")
    message = f"HTTP {status} from {where}: {detail}"
    if status >= 500 or status in RETRYABLE_STATUS:
        raise TransientActionError(message)
    raise PermanentActionError(message)


def _secrets(url: str, headers: dict[str, str], auth: tuple[str, str] | None) -> list[str]:
    """What a receiver's answer must not bring into the outbox: values it was sent."""
    parts = urlsplit(url)
    found = [v for k, v in headers.items() if k.lower() not in PUBLIC_HEADERS]
    found += [parts.path, parts.query, parts.password or ""]
    found += [w for w in re.split(r"[/?&=]", f"{parts.path}?{parts.query}") if len(w) >= 8]
    if auth is not None:
        found += [auth[1], base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()]
    return found


class WebhookOptions(OptionsModel):
    """Options of the ``webhook`` action."""

    url: str
    method: str = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
    secret: str | None = None
    timeout: str | float = "10s"

    _t = field_validator("timeout")(classmethod(lambda cls, v: _check_timeout(v)))


class WebhookAction(Action):
    """POSTs the payload as JSON, with ``Idempotency-Key`` and an HMAC-SHA256 signature."""

    Options = WebhookOptions
    options: WebhookOptions

    def __init__(self, name: str, options: WebhookOptions, context: ActionContext) -> None:
        super().__init__(name, options, context)
        self.http = HttpClient(options.timeout)

    @property
    def target(self) -> str:
        """The receiver's scheme, host and port."""
        return redact_url(self.options.url)

    def body(self, delivery: Delivery) -> Any:
        """The JSON value to send."""
        return delivery.payload

    def deliver(self, delivery: Delivery) -> None:
        """POST the payload."""
        body = orjson.dumps(self.body(delivery), default=str)
        what = f"action {self.name!r}"
        headers = {k: resolve_secrets(v, what) for k, v in self.options.headers.items()}
        headers.setdefault("Content-Type", "application/json")
        headers["Idempotency-Key"] = delivery.idempotency_key
        headers["X-Sluice-Action"] = self.name
        if self.options.secret:
            secret = resolve_secrets(self.options.secret, what).encode()
            digest = hmac.new(secret, body, hashlib.sha256).hexdigest()
            headers[SIGNATURE_HEADER] = f"sha256={digest}"
        url = resolve_secrets(self.options.url, what)
        send(self.http, self.options.method, url, body, headers)

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()


def signature(secret: str, body: bytes) -> str:
    """The ``X-Sluice-Signature`` value a receiver should expect for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class SlackOptions(WebhookOptions):
    """Options of the ``slack`` action (``text`` is a template)."""

    text: str = "[{{ severity }}] {{ action }}{% if reason %}: {{ reason }}{% endif %}"


class SlackAction(WebhookAction):
    """Posts ``{"text": ...}`` to a Slack incoming webhook."""

    Options = SlackOptions
    options: SlackOptions
    template_fields: ClassVar[tuple[str, ...]] = ("text",)

    def body(self, delivery: Delivery) -> Any:
        """Slack's incoming-webhook body."""
        return {"text": delivery.message.get("text", "")}
