"""Action rules: vectorised conditions, for/dedupe/cooldown/rate limit, state, outbox, approvals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pytest

from sluice.actions.engine import ActionEngine
from sluice.actions.outbox import PendingActions, all_actions
from sluice.actions.service import ActionsService, ActionStateError
from sluice.config.loader import pipeline_from_text
from sluice.config.models import ActionConfig
from sluice.core.context import EpochContext
from sluice.core.errors import ConfigError, NotFoundError
from sluice.core.settings import Settings
from sluice.storage.checkpoints import CheckpointStore
from sluice.storage.db import get_engine


class FakeClock:
    """A settable clock (seconds)."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make(
    settings: Settings, actions: list[dict[str, Any]], clock: FakeClock | None = None, **kw: Any
) -> ActionEngine:
    cfgs = [ActionConfig(**a) for a in actions]
    return ActionEngine(
        cfgs, pipeline="p", settings=settings, dispatch=False, clock=clock or FakeClock(), **kw
    ).start()


def commit(engine: ActionEngine, epoch: int, pending: PendingActions) -> None:
    store = CheckpointStore(engine.db)
    store.commit(
        "p",
        epoch,
        {"offset": epoch},
        {"actions": engine.state()},
        [engine.outbox_writer(pending, epoch)],
    )


def batch(devices: list[str], temps: list[float], **extra: list[Any]) -> pa.Table:
    return pa.table({"device": devices, "temp": temps, **extra})


def log_action(tmp_path: Path, **kw: Any) -> dict[str, Any]:
    return {
        "name": "hot",
        "when": "temp > 80",
        "type": "log",
        "path": str(tmp_path / "actions.jsonl"),
        **kw,
    }


def emitted(pending: PendingActions, action: str = "hot") -> list[int]:
    return [int(r.row) for r in pending.records if r.action == action]


def test_all_rules_evaluate_in_one_pass_with_payload_templates(
    settings: Settings, tmp_path: Path
) -> None:
    engine = make(
        settings,
        [
            log_action(
                tmp_path,
                payload={"text": "{{ device }} at {{ temp }}: {{ reason }}"},
                severity="critical",
            ),
            {"name": "cold", "when": "temp < 0 AND device <> 'x'", "type": "log"},
        ],
    )
    table = batch(["a", "b", "c"], [85.0, -3.0, 90.0], m_reason=["spike", None, "drift"])
    pending = engine.evaluate(table, EpochContext("p", 1))
    hot = [r for r in pending.records if r.action == "hot"]
    assert [r.message["payload"] for r in hot] == [
        {"text": "a at 85.0: spike"},
        {"text": "c at 90.0: drift"},
    ]
    assert {r.severity for r in hot} == {"critical"}
    cold = [r for r in pending.records if r.action == "cold"]
    assert cold[0].message["payload"]["row"] == {"device": "b", "temp": -3.0, "m_reason": None}
    engine.close()


def test_dedupe_sends_one_action_per_key_per_window_across_batches(
    settings: Settings, tmp_path: Path
) -> None:
    clock = FakeClock()
    engine = make(
        settings, [log_action(tmp_path, dedupe={"key": "device", "window": "10m"})], clock
    )
    first = engine.evaluate(batch(["a", "a", "b", "a"], [81, 82, 83, 84]), EpochContext("p", 1))
    assert emitted(first) == [0, 2]
    assert first.counts[0].suppressed_dedupe == 2
    clock.now += 60
    second = engine.evaluate(batch(["a", "c"], [90, 91]), EpochContext("p", 2))
    assert emitted(second) == [1]
    clock.now += 600
    third = engine.evaluate(batch(["a", "b"], [90, 91]), EpochContext("p", 3))
    assert emitted(third) == [0, 1]
    engine.close()


def test_dedupe_uses_event_time_within_a_batch(settings: Settings, tmp_path: Path) -> None:
    engine = make(
        settings, [log_action(tmp_path, dedupe={"key": "device", "window": "1m"})], event_time="ts"
    )
    ts = pa.array([0, 30_000_000, 61_000_000, 62_000_000, 125_000_000], pa.timestamp("us", "UTC"))
    pending = engine.evaluate(batch(["a"] * 5, [90.0] * 5, ts=ts), EpochContext("p", 1))
    assert emitted(pending) == [0, 2, 4]
    engine.close()


def test_for_n_consecutive_events_per_group_carries_over_batches(
    settings: Settings, tmp_path: Path
) -> None:
    engine = make(settings, [log_action(tmp_path, group_by="device", **{"for": 3})])
    first = engine.evaluate(
        batch(["a", "b", "a", "b", "a"], [90, 90, 90, 10, 95]), EpochContext("p", 1)
    )
    assert emitted(first) == [4]  # a: 3 in a row; b was reset by 10
    restored = make(settings, [log_action(tmp_path, group_by="device", **{"for": 3})])
    restored.restore(engine.state())
    second = restored.evaluate(batch(["b", "b", "a", "b"], [90, 91, 96, 92]), EpochContext("p", 2))
    assert emitted(second) == [2, 3]  # a continues its streak, b reaches 3 at row 3
    engine.close()
    restored.close()


def test_for_duration_holds_until_the_condition_breaks(settings: Settings, tmp_path: Path) -> None:
    clock = FakeClock()
    engine = make(settings, [log_action(tmp_path, group_by="device", **{"for": "30s"})], clock)
    assert emitted(engine.evaluate(batch(["a"], [90]), EpochContext("p", 1))) == []
    clock.now += 20
    assert emitted(engine.evaluate(batch(["a"], [90]), EpochContext("p", 2))) == []
    clock.now += 15
    assert emitted(engine.evaluate(batch(["a", "a"], [90, 50]), EpochContext("p", 3))) == [0]
    clock.now += 40
    assert emitted(engine.evaluate(batch(["a"], [90]), EpochContext("p", 4))) == []
    engine.close()


def test_cooldown_and_rate_limit_per_key(settings: Settings, tmp_path: Path) -> None:
    clock = FakeClock()
    engine = make(
        settings,
        [
            log_action(tmp_path, cooldown="5m"),
            {
                "name": "per-device",
                "when": "temp > 80",
                "type": "log",
                "rate_limit": {"rate": "2/m", "key": "device"},
            },
        ],
        clock,
    )
    table = batch(["a", "a", "a", "b", "b", "b"], [90.0] * 6)
    pending = engine.evaluate(table, EpochContext("p", 1))
    assert emitted(pending) == [0]
    assert pending.counts[0].suppressed_cooldown == 5
    assert emitted(pending, "per-device") == [0, 1, 3, 4]
    assert pending.counts[1].suppressed_rate_limit == 2
    clock.now += 30  # half a minute refills one token per device
    pending = engine.evaluate(table, EpochContext("p", 2))
    assert emitted(pending) == []
    assert emitted(pending, "per-device") == [0, 3]
    engine.close()


def test_storm_of_10k_anomalies_stays_within_limits_and_counts_suppressed(
    settings: Settings, tmp_path: Path
) -> None:
    engine = make(
        settings,
        [log_action(tmp_path, dedupe={"key": "device", "window": "10m"}, rate_limit="20/m")],
    )
    rng = np.random.default_rng(7)
    devices = [f"d{i}" for i in rng.integers(0, 50, 10_000)]
    table = batch(devices, (81 + rng.random(10_000) * 10).tolist())
    pending = engine.evaluate(table, EpochContext("p", 1))
    counts = pending.counts[0]
    assert (counts.fired, counts.emitted) == (10_000, 20)
    assert counts.suppressed_dedupe == 10_000 - 50
    assert counts.suppressed_rate_limit == 30
    commit(engine, 1, pending)
    stats = ActionsService(engine.db).stats()
    assert stats["by_status"]["pending"] == 20
    assert stats["actions"][0]["suppressed_dedupe"] == 9_950
    engine.close()


def test_template_error_fails_only_that_record(settings: Settings, tmp_path: Path) -> None:
    engine = make(
        settings,
        [
            log_action(tmp_path, payload="{{ missing.field }}"),
            {"name": "ok", "when": "temp > 80", "type": "log"},
        ],
    )
    pending = engine.evaluate(batch(["a"], [90.0]), EpochContext("p", 1))
    bad = next(r for r in pending.records if r.action == "hot")
    assert bad.status == "failed"
    assert "missing" in (bad.error or "")
    assert [r.status for r in pending.records if r.action == "ok"] == ["pending"]
    engine.close()


def test_a_condition_that_fails_on_a_batch_is_counted_not_raised(
    settings: Settings, tmp_path: Path
) -> None:
    engine = make(
        settings,
        [log_action(tmp_path), {"name": "needs-model", "when": "m_anomaly", "type": "log"}],
    )
    ctx = EpochContext("p", 1)
    pending = engine.evaluate(batch(["a"], [90.0]), ctx)
    assert emitted(pending) == [0]
    assert pending.counts[1].rule_errors == 1
    assert ctx.counters["action_rule_errors"] == 1
    engine.close()


def test_replayed_epoch_inserts_nothing_new(settings: Settings, tmp_path: Path) -> None:
    engine = make(settings, [log_action(tmp_path)])
    table = batch(["a", "b"], [90.0, 95.0])
    commit(engine, 1, engine.evaluate(table, EpochContext("p", 1)))
    replay = make(settings, [log_action(tmp_path)])
    commit(replay, 1, replay.evaluate(table, EpochContext("p", 1)))
    with engine.db.connect() as conn:
        assert len(all_actions(conn)) == 2  # outbox rows and lazy batches' actions
    engine.close()
    replay.close()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"dedupe": {"key": "device"}}, "window"),
        ({"rate_limit": "lots"}, "invalid rate"),
        ({"for": "soon"}, "invalid duration"),
        ({"url": 3}, "url"),
    ],
)
def test_bad_options_name_the_action(
    settings: Settings, extra: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=f"action 'hook'.*{message}|{message}.*hook"):
        make(
            settings,
            [
                {
                    "name": "hook",
                    "when": "temp > 1",
                    "type": "webhook",
                    "url": "http://127.0.0.1:9/x",
                    **extra,
                }
            ],
        )


def test_bad_condition_and_unknown_type_are_config_errors(settings: Settings) -> None:
    with pytest.raises(ConfigError, match="action 'x': invalid condition"):
        make(settings, [{"name": "x", "when": "temp >", "type": "log"}])
    with pytest.raises(ConfigError, match="unknown action type 'pager'"):
        make(settings, [{"name": "x", "when": "true", "type": "pager"}])


def test_yaml_pipeline_actions_compile(settings: Settings, tmp_path: Path) -> None:
    pipeline = pipeline_from_text(f"""
name: p
source: {{type: generator}}
actions:
  - name: page
    when: "temp > 80"
    type: log
    path: {tmp_path / "a.jsonl"}
    group_by: device
    for: 2
    dedupe: {{key: device, window: 10m}}
    severity: critical
""")
    engine = ActionEngine(pipeline.actions, pipeline="p", settings=settings, dispatch=False).start()
    assert engine.rules[0].options.severity == "critical"
    engine.close()


def test_approval_hold_approve_reject_and_expiry(settings: Settings, tmp_path: Path) -> None:
    clock = FakeClock()
    engine = make(
        settings, [log_action(tmp_path, approval="required", approval_timeout="1h")], clock
    )
    commit(engine, 1, engine.evaluate(batch(["a", "b", "c"], [90.0] * 3), EpochContext("p", 1)))
    service = ActionsService(engine.db, clock=clock)
    held = service.list(status="awaiting_approval")
    assert len(held) == 3
    assert engine.dispatcher.run_once() == 0
    first, second, third = sorted(r["id"] for r in held)
    service.approve(first)
    service.reject(second)
    assert engine.dispatcher.run_once() == 1
    assert service.get(first)["status"] == "delivered"
    assert service.get(second)["status"] == "rejected"
    lines = (tmp_path / "actions.jsonl").read_text().splitlines()
    assert [orjson.loads(x)["payload"]["row"]["device"] for x in lines] == ["a"]
    clock.now += 3601
    engine.dispatcher.run_once()
    assert service.get(third)["status"] == "expired"
    with pytest.raises(ActionStateError, match="only awaiting_approval"):
        service.approve(third)
    service.retry(third)
    assert engine.dispatcher.run_once() == 1
    with pytest.raises(NotFoundError):
        service.get(999_999)
    engine.close()


def test_state_round_trip_is_stable(settings: Settings, tmp_path: Path) -> None:
    engine = make(
        settings,
        [
            log_action(
                tmp_path,
                group_by="device",
                **{"for": 2},
                dedupe={"key": "device", "window": "1h"},
                rate_limit="10/m",
                cooldown="1s",
            )
        ],
    )
    engine.evaluate(batch(["a", "a", "b"], [90.0, 91.0, 92.0]), EpochContext("p", 1))
    blob = engine.state()
    other = make(
        settings,
        [
            log_action(
                tmp_path,
                group_by="device",
                **{"for": 2},
                dedupe={"key": "device", "window": "1h"},
                rate_limit="10/m",
                cooldown="1s",
            )
        ],
    )
    other.restore(blob)
    assert other.state() == blob
    assert get_engine(str(settings.metadata_url)) is engine.db
    engine.close()
    other.close()


@pytest.mark.parametrize(
    "column",
    [
        pa.chunked_array([pa.array(["a", None, "b"]), pa.array(["a", "é", None])]),
        pa.chunked_array([pa.array([3, None, 3, 7, -1, None], pa.int64())]),
        pa.chunked_array([pa.array([1.5, None, float("nan"), 1.5, 0.0, -0.0])]),
    ],
)
def test_epoch_keys_equal_the_keys_made_per_rule(column: pa.ChunkedArray) -> None:
    """A one-column key encoded once per epoch gives each row the key string that joining
    the row's columns gives (nulls as '')."""
    from sluice.actions.engine import EpochKeys
    from sluice.actions.rules import key_strings

    table = pa.table({"k": column, "other": np.arange(6)})
    keys = EpochKeys(table)
    for rows in (np.arange(6), np.array([5, 0, 2]), np.array([], np.int64)):
        assert keys.of(["k"], rows).tolist() == key_strings(table, ["k"], rows).tolist()
        both = keys.of(["k", "other"], rows).tolist()
        assert both == key_strings(table, ["k", "other"], rows).tolist()
    assert keys.of([], np.array([1, 2])).tolist() == ["", ""]
