"""The ``airflow`` action: trigger a DAG run through Airflow's stable REST API.

``POST {base_url}/api/v1/dags/{dag_id}/dagRuns`` with basic auth and
``{"dag_run_id": "sluice-<idempotency key>", "conf": <payload>}``. The run id is derived
from the idempotency key, so a repeated delivery answers 409 and counts as delivered.
"""

from __future__ import annotations

from urllib.parse import quote

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


class AirflowOptions(OptionsModel):
    """Options of the ``airflow`` action."""

    base_url: str
    dag_id: str
    username: str | None = None
    password: str | None = None
    timeout: str | float = "10s"

    _t = field_validator("timeout")(classmethod(lambda cls, v: _check_timeout(v)))


class AirflowAction(Action):
    """Triggers a DAG run whose ``conf`` is the rendered payload."""

    Options = AirflowOptions
    options: AirflowOptions

    def __init__(self, name: str, options: AirflowOptions, context: ActionContext) -> None:
        super().__init__(name, options, context)
        self.http = HttpClient(options.timeout)

    @property
    def target(self) -> str:
        """The Airflow webserver."""
        return redact_url(self.options.base_url)

    def deliver(self, delivery: Delivery) -> None:
        """POST a dagRun; 409 (the run id exists) means it was already triggered."""
        what = f"action {self.name!r}"
        base = resolve_secrets(self.options.base_url, what).rstrip("/")
        url = f"{base}/api/v1/dags/{quote(self.options.dag_id, safe='')}/dagRuns"
        payload = delivery.payload
        conf = payload if isinstance(payload, dict) else {"payload": payload}
        body = orjson.dumps(
            {"dag_run_id": f"sluice-{delivery.idempotency_key}", "conf": conf}, default=str
        )
        auth = None
        if self.options.username is not None:
            auth = (
                resolve_secrets(self.options.username, what),
                resolve_secrets(self.options.password or "", what),
            )
        headers = {"Content-Type": "application/json", "Idempotency-Key": delivery.idempotency_key}
        send(self.http, "POST", url, body, headers, auth=auth, ok=frozenset({409}))

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()
