"""HTTP actions: ``webhook`` (JSON POST, signed) and ``slack`` (incoming-webhook format).

Header values, URLs and the signing secret may contain ``${VAR}``; it is resolved from
the environment at delivery time and never stored in the outbox or written to logs.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from typing import Any, ClassVar

import httpx
import orjson
from pydantic import Field, field_validator

from sluice.actions.base import (
    Action,
    ActionContext,
    Delivery,
    OptionsModel,
    redact_url,
    resolve_secrets,
)
from sluice.core.errors import PermanentActionError, TransientActionError
from sluice.core.types import duration_us

SIGNATURE_HEADER = "X-Sluice-Signature"
RETRYABLE_STATUS = frozenset({408, 425, 429})


def _check_timeout(value: str | float) -> str | float:
    duration_us(value)
    return value


class HttpClient:
    """One keep-alive httpx client per action, created lazily, safe across threads."""

    def __init__(self, timeout: str | float, pool: int = 16) -> None:
        self.timeout = duration_us(timeout) / 1e6
        self.pool = pool
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
    client: httpx.Client,
    method: str,
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    auth: tuple[str, str] | None = None,
    ok: frozenset[int] = frozenset(),
) -> None:
    """Send one request; map failures to Transient/PermanentActionError (URL redacted)."""
    where = redact_url(url)
    try:
        response = client.request(method, url, content=body, headers=headers, auth=auth)
    except httpx.TimeoutException as exc:
        raise TransientActionError(f"timeout calling {where}: {type(exc).__name__}") from None
    except httpx.TransportError as exc:
        raise TransientActionError(f"cannot reach {where}: {type(exc).__name__}: {exc}") from None
    status = response.status_code
    if 200 <= status < 300 or status in ok:
        return
    detail = response.text[:300].replace("\n", " ")
    message = f"HTTP {status} from {where}: {detail}"
    if status >= 500 or status in RETRYABLE_STATUS:
        raise TransientActionError(message)
    raise PermanentActionError(message)


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
        send(self.http.get(), self.options.method, url, body, headers)

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
