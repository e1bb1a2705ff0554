"""The ``airflow`` action: trigger a DAG run through Airflow 3's REST API.

``POST {base_url}/api/v2/dags/{dag_id}/dagRuns`` with ``{"dag_run_id": "sluice-<idempotency
key>", "logical_date": null, "conf": <payload>}`` and a bearer token. The token (a JWT) comes
from ``POST {base_url}/auth/token`` with ``username``/``password`` (Airflow's simple auth
manager and FAB both answer there), is kept, and is fetched again once when Airflow answers
401 (it expired); ``token`` gives a ready-made one instead. The run id is derived from the
idempotency key, so a repeated delivery answers 409 and counts as delivered. Airflow 2's
``/api/v1`` is gone in Airflow 3 (it answers 405), and Airflow 2 is not supported.
"""

from __future__ import annotations

import threading
from urllib.parse import quote

import httpx
import orjson
from pydantic import field_validator

from sluice.actions.base import (
    Action,
    ActionContext,
    Delivery,
    OptionsModel,
    redact_url,
    resolve_secrets,
)
from sluice.actions.webhook import HttpClient, _check_timeout, send
from sluice.core.errors import PermanentActionError, TransientActionError


class AirflowOptions(OptionsModel):
    """Options of the ``airflow`` action."""

    base_url: str
    dag_id: str
    username: str | None = None
    password: str | None = None
    token: str | None = None
    timeout: str | float = "10s"

    _t = field_validator("timeout")(classmethod(lambda cls, v: _check_timeout(v)))


class AirflowAction(Action):
    """Triggers a DAG run whose ``conf`` is the rendered payload."""

    Options = AirflowOptions
    options: AirflowOptions

    def __init__(self, name: str, options: AirflowOptions, context: ActionContext) -> None:
        super().__init__(name, options, context)
        self.http = HttpClient(options.timeout)
        self._token: str | None = None
        self._lock = threading.Lock()

    @property
    def target(self) -> str:
        """The Airflow api-server."""
        return redact_url(self.options.base_url)

    def deliver(self, delivery: Delivery) -> None:
        """POST a dagRun; 409 (the run id exists) means it was already triggered."""
        base = resolve_secrets(self.options.base_url, f"action {self.name!r}").rstrip("/")
        url = f"{base}/api/v2/dags/{quote(self.options.dag_id, safe='')}/dagRuns"
        payload = delivery.payload
        conf = payload if isinstance(payload, dict) else {"payload": payload}
        body = orjson.dumps(
            {
                "dag_run_id": f"sluice-{delivery.idempotency_key}",
                "logical_date": None,
                "conf": conf,
            },
            default=str,
        )
        headers = {"Content-Type": "application/json", "Idempotency-Key": delivery.idempotency_key}
        token = self._bearer(base, renew=False)
        try:
            self._post(url, body, headers, token)
        except PermanentActionError as exc:
            if not str(exc).startswith("HTTP 401") or self.options.token is not None:
                raise
            self._post(url, body, headers, self._bearer(base, renew=True))

    def _post(self, url: str, body: bytes, headers: dict[str, str], token: str | None) -> None:
        if token is not None:
            headers = headers | {"Authorization": f"Bearer {token}"}
        send(self.http, "POST", url, body, headers, ok=frozenset({409}))

    def _bearer(self, base: str, *, renew: bool) -> str | None:
        """The JWT to send: the configured one, else one from ``/auth/token`` (kept)."""
        what = f"action {self.name!r}"
        if self.options.token is not None:
            return resolve_secrets(self.options.token, what)
        if self.options.username is None:
            return None
        with self._lock:
            if self._token is None or renew:
                self._token = self._login(base, what)
            return self._token

    def _login(self, base: str, what: str) -> str:
        url = f"{base}/auth/token"
        where = redact_url(url)
        self.http.policy.check(url, where)
        credentials = {
            "username": resolve_secrets(self.options.username or "", what),
            "password": resolve_secrets(self.options.password or "", what),
        }
        try:
            response = self.http.get().post(url, json=credentials)
        except httpx.TransportError as exc:
            raise TransientActionError(f"cannot reach {where}: {type(exc).__name__}") from None
        if response.status_code >= 500:
            raise TransientActionError(f"HTTP {response.status_code} from {where}")
        token = None
        if response.status_code in (200, 201):
            try:
                token = orjson.loads(response.content).get("access_token")
            except (orjson.JSONDecodeError, AttributeError):
                token = None
        if not isinstance(token, str):
            raise PermanentActionError(
                f"HTTP {response.status_code} from {where}: no access token for "
                f"user {credentials['username']!r}"
            )
        return token

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()
