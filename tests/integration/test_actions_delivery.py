"""Delivery reliability against real local HTTP receivers (no mocks of httpx)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
import pyarrow as pa
import pytest
from sqlalchemy import func, select

from sluice.actions.engine import ActionEngine
from sluice.actions.outbox import PendingActions, attempts, outbox
from sluice.actions.service import ActionsService
from sluice.actions.webhook import signature
from sluice.config.models import ActionConfig
from sluice.core.context import EpochContext
from sluice.core.settings import Settings
from sluice.storage.checkpoints import CheckpointStore
from tests.integration.test_actions_receiver import Received, Receiver

FAST_RETRY = {"max_attempts": 100, "backoff": "50ms", "max_backoff": "300ms"}
OUTAGE_S = 30.0  # the scenario: the receiver is down for 30 s, then up
OUTAGE_RETRY = {"max_attempts": 1000, "backoff": "50ms", "max_backoff": "1s"}


def make(settings: Settings, actions: list[dict[str, Any]], **kw: Any) -> ActionEngine:
    return ActionEngine(
        [ActionConfig(**a) for a in actions], pipeline="p", settings=settings, dispatch=False, **kw
    ).start()


def commit(engine: ActionEngine, epoch: int, pending: PendingActions) -> None:
    CheckpointStore(engine.db).commit(
        "p",
        epoch,
        {"offset": epoch},
        {"actions": engine.state()},
        [engine.outbox_writer(pending, epoch)],
    )


def events(n: int, devices: int, start: int = 0) -> pa.Table:
    return pa.table(
        {
            "device": [f"d{i % devices}" for i in range(start, start + n)],
            "seq": list(range(start, start + n)),
            "anomaly": [True] * n,
        }
    )


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def statuses(engine: ActionEngine) -> dict[str, int]:
    with engine.db.connect() as conn:
        rows = conn.execute(select(outbox.c.status, func.count()).group_by(outbox.c.status))
        return {status: int(n) for status, n in rows}


def test_receiver_down_then_up_delivers_each_action_once_in_order_per_key(
    settings: Settings,
) -> None:
    receiver = Receiver()
    engine = make(
        settings,
        [
            {
                "name": "hook",
                "when": "anomaly",
                "type": "webhook",
                "url": f"{receiver.url}/alerts",
                "key": "device",
                "retry": OUTAGE_RETRY,
                "payload": {"seq": "{{ seq }}", "device": "{{ device }}"},
            }
        ],
        dispatcher_options={
            "breaker_threshold": 3,
            "breaker_reset": 0.3,
            "poll_interval": 0.05,
            "seed": 1,
        },
    )
    commit(engine, 1, engine.evaluate(events(200, 10), EpochContext("p", 1)))
    engine.dispatcher.start()
    commit(engine, 2, engine.evaluate(events(100, 10, start=200), EpochContext("p", 2)))
    engine.notify()
    time.sleep(OUTAGE_S)  # the receiver is down: connection refused, retried with backoff
    assert statuses(engine).get("delivered", 0) == 0
    receiver.start()
    try:
        wait_for(lambda: statuses(engine) == {"delivered": 300})
    finally:
        engine.close()
        receiver.stop()
    keys = receiver.keys()
    assert len(keys) == len(set(keys)) == 300
    arrived: dict[str, list[int]] = {}
    for req in receiver.requests:
        arrived.setdefault(req.json["device"], []).append(int(req.json["seq"]))
    assert all(seqs == sorted(seqs) for seqs in arrived.values())
    assert sorted(s for seqs in arrived.values() for s in seqs) == list(range(300))
    with engine.db.connect() as conn:
        failures = conn.execute(
            select(func.count()).select_from(attempts).where(attempts.c.status == "transient")
        ).scalar()
    assert failures and failures > 0


def test_4xx_and_template_error_are_recorded_without_retry(settings: Settings) -> None:
    receiver = Receiver(respond=lambda req: 422 if req.path == "/reject" else 200).start()
    engine = make(
        settings,
        [
            {
                "name": "rejected",
                "when": "anomaly",
                "type": "webhook",
                "url": f"{receiver.url}/reject",
            },
            {
                "name": "broken",
                "when": "anomaly",
                "type": "webhook",
                "url": f"{receiver.url}/ok",
                "payload": {"x": "{{ nothing.here }}"},
            },
            {"name": "fine", "when": "anomaly", "type": "webhook", "url": f"{receiver.url}/ok"},
        ],
    )
    try:
        commit(engine, 1, engine.evaluate(events(5, 5), EpochContext("p", 1)))
        assert engine.dispatcher.run_once() == 10
        assert engine.dispatcher.run_once() == 0
    finally:
        engine.close()
        receiver.stop()
    service = ActionsService(engine.db)
    rejected = service.list(action="rejected")
    assert {r["status"] for r in rejected} == {"failed"}
    assert all("HTTP 422" in r["last_error"] and r["attempts"] == 1 for r in rejected)
    broken = service.list(action="broken")
    assert {r["status"] for r in broken} == {"failed"}
    assert all("nothing" in r["last_error"] and r["attempts"] == 0 for r in broken)
    assert {r["status"] for r in service.list(action="fine")} == {"delivered"}
    paths = [r.path for r in receiver.requests]
    assert (paths.count("/reject"), paths.count("/ok")) == (5, 5)


def test_crash_between_commit_and_dispatch_then_replay(settings: Settings) -> None:
    receiver = Receiver().start()
    spec = [
        {
            "name": "hook",
            "when": "anomaly",
            "type": "webhook",
            "url": f"{receiver.url}/a",
            "dedupe": {"key": "device", "window": "1h"},
        }
    ]
    table = events(50, 20)
    crashed = make(settings, spec)
    pending = crashed.evaluate(table, EpochContext("p", 1))
    commit(crashed, 1, pending)
    del crashed  # "crash": nothing was dispatched
    restarted = make(settings, spec)
    try:
        assert restarted.dispatcher.run_once() == 20
        replay = make(settings, spec)  # the runner replays epoch 1 from the previous state
        commit(replay, 1, replay.evaluate(table, EpochContext("p", 1)))
        assert restarted.dispatcher.run_once() == 0
        replay.close()
    finally:
        restarted.close()
        receiver.stop()
    assert len(receiver.requests) == len(set(receiver.keys())) == 20
    assert statuses(restarted) == {"delivered": 20}


def test_circuit_breaker_stops_attempts_while_open(settings: Settings) -> None:
    receiver = Receiver(respond=lambda _req: 503).start()
    engine = make(
        settings,
        [
            {
                "name": "hook",
                "when": "anomaly",
                "type": "webhook",
                "url": f"{receiver.url}/a",
                "retry": FAST_RETRY,
            }
        ],
        dispatcher_options={"breaker_threshold": 3, "breaker_reset": 60.0, "workers": 1},
    )
    try:
        commit(engine, 1, engine.evaluate(events(10, 10), EpochContext("p", 1)))
        engine.dispatcher.run_once()
        time.sleep(0.4)  # backoff elapsed, breaker still open
        assert engine.dispatcher.run_once() == 0
    finally:
        engine.close()
        receiver.stop()
    assert len(receiver.requests) == 3
    assert statuses(engine) == {"pending": 10}


def test_dead_after_max_attempts_and_manual_retry(settings: Settings) -> None:
    state = {"status": 500}
    receiver = Receiver(respond=lambda _req: state["status"]).start()
    engine = make(
        settings,
        [
            {
                "name": "hook",
                "when": "anomaly",
                "type": "webhook",
                "url": f"{receiver.url}/a",
                "retry": {"max_attempts": 2, "backoff": "10ms"},
            }
        ],
    )
    try:
        commit(engine, 1, engine.evaluate(events(1, 1), EpochContext("p", 1)))
        engine.dispatcher.run_once()
        time.sleep(0.05)
        engine.dispatcher.run_once()
        service = ActionsService(engine.db)
        (row,) = service.list()
        assert (row["status"], row["attempts"]) == ("dead", 2)
        assert "HTTP 500" in row["last_error"]
        state["status"] = 200
        service.retry(row["id"])
        assert engine.dispatcher.run_once() == 1
        assert [a["status"] for a in service.get(row["id"])["attempt_log"]] == [
            "transient",
            "transient",
            "delivered",
        ]
    finally:
        engine.close()
        receiver.stop()


def test_webhook_signs_the_body_and_resolves_secrets_at_delivery(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK_SECRET", "s3cr3t-signing")
    monkeypatch.setenv("HOOK_TOKEN", "tok-123456")
    receiver = Receiver().start()
    engine = make(
        settings,
        [
            {
                "name": "hook",
                "when": "anomaly",
                "type": "webhook",
                "url": f"{receiver.url}/a",
                "secret": "${HOOK_SECRET}",
                "headers": {"Authorization": "Bearer ${HOOK_TOKEN}"},
            }
        ],
    )
    try:
        commit(engine, 1, engine.evaluate(events(1, 1), EpochContext("p", 1)))
        engine.dispatcher.run_once()
    finally:
        engine.close()
        receiver.stop()
    (req,) = receiver.requests
    assert req.headers["Authorization"] == "Bearer tok-123456"
    assert req.headers["X-Sluice-Signature"] == signature("s3cr3t-signing", req.body)
    assert len(req.headers["Idempotency-Key"]) == 40
    with engine.db.connect() as conn:
        dumped = " ".join(str(v) for row in conn.execute(select(outbox)) for v in row)
    assert "tok-123456" not in dumped and "s3cr3t" not in dumped


def test_missing_secret_fails_permanently_without_revealing_values(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOT_SET_TOKEN", raising=False)
    receiver = Receiver().start()
    engine = make(
        settings,
        [
            {
                "name": "hook",
                "when": "anomaly",
                "type": "webhook",
                "url": f"{receiver.url}/a?token=hidden-value",
                "headers": {"X-Token": "${NOT_SET_TOKEN}"},
            }
        ],
    )
    try:
        commit(engine, 1, engine.evaluate(events(1, 1), EpochContext("p", 1)))
        engine.dispatcher.run_once()
    finally:
        engine.close()
        receiver.stop()
    (row,) = ActionsService(engine.db).list()
    assert row["status"] == "failed"
    assert "NOT_SET_TOKEN is not set" in row["last_error"]
    assert receiver.requests == []


def test_slack_sends_incoming_webhook_text(settings: Settings) -> None:
    receiver = Receiver().start()
    engine = make(
        settings,
        [
            {
                "name": "notify",
                "when": "anomaly",
                "type": "slack",
                "url": f"{receiver.url}/services/T/B/X",
                "severity": "critical",
                "text": "{{ device }} ({{ severity }}): seq {{ seq }}",
            }
        ],
    )
    try:
        commit(engine, 1, engine.evaluate(events(1, 1), EpochContext("p", 1)))
        engine.dispatcher.run_once()
    finally:
        engine.close()
        receiver.stop()
    assert [r.json for r in receiver.requests] == [{"text": "d0 (critical): seq 0"}]


def _airflow(req: Received) -> int:
    # The Airflow 3 protocol (a real Airflow 3 runs in tests/integration/test_airflow_real.py).
    if req.path == "/auth/token":
        ok = req.json == {"username": "admin", "password": "airflow-pw"}
        return 201 if ok else 401
    if (
        req.path != "/api/v2/dags/retrain_model/dagRuns"
        or req.headers.get("Authorization") != "Bearer jwt-1"
        or req.headers.get("Content-Type") != "application/json"
    ):
        return 400
    body = req.json
    if set(body) != {"dag_run_id", "logical_date", "conf"} or body["logical_date"] is not None:
        return 400
    return 409 if body["dag_run_id"] == "sluice-duplicate" else 200


def test_airflow_triggers_a_dag_run_through_the_v2_api_with_a_token(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_PW", "airflow-pw")
    receiver = Receiver(
        respond=_airflow,
        reply=lambda req: b'{"access_token": "jwt-1"}' if req.path == "/auth/token" else b"{}",
    ).start()
    engine = make(
        settings,
        [
            {
                "name": "retrain",
                "when": "anomaly",
                "type": "airflow",
                "base_url": receiver.url,
                "dag_id": "retrain_model",
                "username": "admin",
                "password": "${AIRFLOW_PW}",
                "payload": {"device": "{{ device }}"},
            }
        ],
    )
    try:
        commit(engine, 1, engine.evaluate(events(2, 2), EpochContext("p", 1)))
        assert engine.dispatcher.run_once() == 2
    finally:
        engine.close()
        receiver.stop()
    assert statuses(engine) == {"delivered": 2}
    runs = [r for r in receiver.requests if r.path != "/auth/token"]
    assert sorted(r.json["conf"]["device"] for r in runs) == ["d0", "d1"]
    assert len(receiver.requests) == 3  # one token for both runs


def test_run_job_calls_the_injected_job_runner(settings: Settings) -> None:
    started: list[tuple[str, dict[str, Any], str]] = []
    engine = make(
        settings,
        [
            {
                "name": "retrain",
                "when": "anomaly",
                "type": "run_job",
                "job": "retrain-anomaly",
                "params": {"full": True},
                "payload": {"device": "{{ device }}"},
            },
            {"name": "orphan", "when": "anomaly", "type": "run_job", "job": "x"},
        ],
        job_runner=lambda job, params, key: started.append((job, params, key)),
    )
    try:
        commit(engine, 1, engine.evaluate(events(1, 1), EpochContext("p", 1)))
        engine.dispatcher.run_once()
    finally:
        engine.close()
    assert next((j, p) for j, p, _ in started) == (
        "retrain-anomaly",
        {"full": True, "device": "d0"},
    )
    no_runner = make(settings, [{"name": "r", "when": "anomaly", "type": "run_job", "job": "x"}])
    commit(no_runner, 2, no_runner.evaluate(events(1, 1), EpochContext("p", 2)))
    no_runner.dispatcher.run_once()
    no_runner.close()
    (row,) = ActionsService(no_runner.db).list(action="r")
    assert row["status"] == "failed" and "no job runner" in row["last_error"]


def test_storm_deliveries_stay_within_the_rate_limit(settings: Settings) -> None:
    receiver = Receiver().start()
    engine = make(
        settings,
        [
            {
                "name": "hook",
                "when": "anomaly",
                "type": "webhook",
                "url": f"{receiver.url}/a",
                "rate_limit": "25/m",
                "dedupe": {"key": "device", "window": "10m"},
            }
        ],
    )
    try:
        pending = engine.evaluate(events(10_000, 100), EpochContext("p", 1))
        commit(engine, 1, pending)
        while engine.dispatcher.run_once():
            pass
    finally:
        engine.close()
        receiver.stop()
    assert len(receiver.requests) == 25
    (totals,) = ActionsService(engine.db).stats()["actions"]
    assert totals["fired"] == 10_000
    assert totals["suppressed_dedupe"] + totals["suppressed_rate_limit"] == 10_000 - 25
    devices = {orjson.loads(r.body)["row"]["device"] for r in receiver.requests}
    assert devices == {f"d{i}" for i in range(25)}
