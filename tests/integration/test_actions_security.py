"""HTTP actions keep secrets out of stored errors and call only the addresses policy allows."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from sluice.actions.address import AddressList, AddressPolicy
from sluice.actions.service import ActionsService
from sluice.core.context import EpochContext
from sluice.core.errors import ConfigError, PermanentActionError
from sluice.core.settings import Settings
from tests.integration.test_actions_delivery import commit, events, make
from tests.integration.test_actions_receiver import Received, Receiver

TOKEN, API_SECRET, URL_TOKEN, PASSWORD = (
    "tok-abcdef123456",
    "k3y-0f-api",
    "q-secret-987654",
    "pw-airflow-42",
)
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZG1pbiJ9.c2lnbmF0dXJl"


def _echo(req: Received) -> bytes:
    """A careless receiver: its error body repeats the request's headers and path."""
    return orjson.dumps({"error": "unauthorized", "path": req.path, "headers": req.headers})


def _deliver(settings: Settings, actions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    engine = make(settings, actions)
    try:
        commit(engine, 1, engine.evaluate(events(1, 1), EpochContext("p", 1)))
        engine.dispatcher.run_once()
    finally:
        engine.close()
    return ActionsService(engine.db).list()


def test_header_values_and_tokens_are_redacted_from_stored_errors(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK_TOKEN", TOKEN)
    monkeypatch.setenv("URL_TOKEN", URL_TOKEN)
    monkeypatch.setenv("AIRFLOW_PW", PASSWORD)

    def respond(req: Received) -> int:  # Airflow 3: a JWT for the password, then refuse it
        return 201 if req.path == "/auth/token" else 401

    def reply(req: Received) -> bytes:
        return orjson.dumps({"access_token": JWT}) if req.path == "/auth/token" else _echo(req)

    receiver = Receiver(respond=respond, reply=reply).start()
    try:
        rows = _deliver(
            settings,
            [
                {
                    "name": "hook",
                    "when": "anomaly",
                    "type": "webhook",
                    "url": f"{receiver.url}/alerts?token=${{URL_TOKEN}}",
                    "headers": {"Authorization": "Bearer ${HOOK_TOKEN}", "X-Api-Key": API_SECRET},
                },
                {
                    "name": "dag",
                    "when": "anomaly",
                    "type": "airflow",
                    "base_url": receiver.url,
                    "dag_id": "retrain",
                    "username": "admin",
                    "password": "${AIRFLOW_PW}",
                },
            ],
        )
    finally:
        receiver.stop()
    # the receiver did see the secrets (the deliveries may arrive in any order) ...
    logins = [r.json for r in receiver.requests if r.path == "/auth/token"]
    assert logins and all(login == {"username": "admin", "password": PASSWORD} for login in logins)
    seen = {r.headers["Authorization"] for r in receiver.requests if r.path != "/auth/token"}
    assert seen == {f"Bearer {JWT}", f"Bearer {TOKEN}"}
    errors = {row["action"]: row["last_error"] for row in rows}
    for error in errors.values():  # ... and echoed them, but the outbox keeps none
        assert error.startswith(f"HTTP 401 from {receiver.url}")
        assert "[redacted]" in error and "unauthorized" in error
        for secret in (TOKEN, API_SECRET, URL_TOKEN, PASSWORD, JWT):
            assert secret not in error
    assert '"Content-Type":"application/json"' in errors["hook"]  # Sluice's own: readable


def test_link_local_targets_are_denied_by_default(settings: Settings) -> None:
    (row,) = _deliver(
        settings,
        [
            {
                "name": "metadata",
                "when": "anomaly",
                "type": "webhook",
                "url": "http://169.254.169.254/latest/meta-data/",
                "retry": {"max_attempts": 1},
            }
        ],
    )
    assert row["status"] == "failed"
    assert "address 169.254.169.254 is in SLUICE_WEBHOOK_DENY" in row["last_error"]


@pytest.mark.parametrize(
    ("deny", "allow", "delivered"),
    [
        ("127.0.0.0/8", "", False),
        ("none", "10.0.0.0/8", False),
        ("none", "127.0.0.1/32", True),
        (None, "localhost,127.0.0.1", True),
    ],
)
def test_deny_and_allow_lists_are_configurable(
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    deny: str | None,
    allow: str,
    delivered: bool,
) -> None:
    if deny is not None:
        monkeypatch.setenv("SLUICE_WEBHOOK_DENY", deny)
    monkeypatch.setenv("SLUICE_WEBHOOK_ALLOW", allow)
    receiver = Receiver().start()
    try:
        action = {"name": "own-api", "when": "anomaly", "type": "webhook", "url": receiver.url}
        (row,) = _deliver(settings, [action])
    finally:
        receiver.stop()
    assert (row["status"] == "delivered") is delivered
    assert len(receiver.requests) == int(delivered)
    if not delivered:
        assert "SLUICE_WEBHOOK_" in row["last_error"]


def test_address_lists_parse_networks_and_names() -> None:
    policy = AddressPolicy(
        AddressList.parse("fe80::/10, 169.254.0.0/16, metadata.internal", "D"),
        AddressList.parse("*.example.com, localhost", "A"),
    )
    policy.check("http://localhost:9/x", "hook")  # allowed by name, whatever it resolves to
    assert policy.allow.has_name("hooks.example.com") and not policy.allow.has_name("example.com")
    with pytest.raises(PermanentActionError, match=r"host 'metadata\.internal' is in"):
        policy.check("http://metadata.internal/", "hook")
    with pytest.raises(PermanentActionError, match="SLUICE_WEBHOOK_DENY"):
        policy.check("http://[::ffff:169.254.169.254]/", "hook")  # IPv4-mapped
    with pytest.raises(PermanentActionError, match="not in SLUICE_WEBHOOK_ALLOW"):
        policy.check("http://127.0.0.1:9/", "hook")
    with pytest.raises(ConfigError, match="neither an IP network nor a host name"):
        AddressList.parse("10.0.0.0/8, not a host!", "SLUICE_WEBHOOK_ALLOW")
    assert not AddressList.parse("none", "X")
