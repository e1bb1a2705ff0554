"""Action messages joined from JSON pieces and batched log lines equal the per-record encoding."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pytest
from sqlalchemy import select

from sluice.actions.base import ActionContext, BatchDelivery, Delivery
from sluice.actions.engine import ActionEngine
from sluice.actions.log import LogAction, LogOptions, batch_lines
from sluice.actions.outbox import (
    ActionRecord,
    PendingActions,
    RecordGroup,
    all_actions,
    as_dicts,
    batches,
    ensure_outbox,
    idempotency_key,
    outbox,
    write_pending,
)
from sluice.actions.service import ActionsService
from sluice.config.models import ActionConfig
from sluice.core.context import EpochContext
from sluice.core.settings import Settings
from sluice.storage.checkpoints import CheckpointStore
from sluice.storage.db import get_engine

NOW = 1_700_000_000.0


def scored() -> pa.Table:
    """Rows with the types a scored batch carries, nulls, odd strings and an internal column."""
    start = datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1_000_000
    return pa.table(
        {
            "device": ["a", "b", 'q"uote', "ünï", None, "a"],
            "ts": pa.array(
                [int(start + i * 1_500_000) + (i % 2) * 123 for i in range(6)],
                pa.timestamp("us", tz="UTC"),
            ),
            "seen": pa.array(  # naive, a null, whole seconds (written without a fraction)
                [0, None, 1_000_000, -1, 253_402_300_799_999_999, 5], pa.timestamp("us")
            ),
            "day": pa.array([0, 1, None, 3, 4, 5], pa.date32()),
            "temp": [81.5, 1e-7, 90.0, float("nan"), 85.25, 1e21],
            "n": pa.array([1, None, 3, 4, 5, 2**40], pa.int64()),
            "ok": [True, False, None, True, True, False],
            "tags": [["x"], [], None, ["y", "z"], ["a"], []],
            "m_reason": ["", None, "temp 4 sigma", "line\nbreak", "", "x"],
            "m_anomaly": [True, True, True, True, False, True],
            "__origin": ["o"] * 6,
        }
    )


def expected_message(engine: ActionEngine, table: pa.Table, record: ActionRecord) -> bytes:
    """The message as the per-record code built it: a JSON round trip of the row's dict."""
    visible = [c for c in table.column_names if not c.startswith("__")]
    index = int(record.row)
    as_dict = table.select(visible).slice(index, 1).to_pylist()[0]
    row = orjson.loads(orjson.dumps(as_dict, default=str))
    reasons = [row[c] for c in visible if c.endswith("_reason") and row[c] not in (None, "")]
    payload = {
        "action": record.action,
        "pipeline": engine.pipeline,
        "epoch": 3,
        "severity": record.severity,
        "key": record.key,
        "reason": reasons[0] if reasons else None,
        "row": row,
    }
    return orjson.dumps({"payload": payload}, default=str)


def make(tmp_path: Path, rules: list[dict[str, Any]]) -> ActionEngine:
    return ActionEngine(
        [ActionConfig(**r) for r in rules],
        pipeline="p",
        settings=Settings(home=tmp_path / "home"),
        dispatch=False,
        clock=lambda: NOW,
    ).start()


def test_default_messages_equal_the_json_of_each_rows_message(tmp_path: Path) -> None:
    out = str(tmp_path / "a.jsonl")
    engine = make(
        tmp_path,
        [
            {"name": "all", "when": "true", "type": "log", "path": out},
            {"name": "hot", "when": "temp > 80", "type": "log", "path": out, "key": "device"},
            {
                "name": "two",
                "when": "m_anomaly",
                "type": "log",
                "path": out,
                "key": ["device", "n"],
                "severity": "critical",
            },
            {
                "name": "tpl",
                "when": "m_anomaly",
                "type": "log",
                "path": out,
                "payload": {"d": "{{ device }}", "k": "{{ key }}"},
            },
        ],
    )
    table = scored()
    pending = engine.evaluate(table, EpochContext("p", 3))
    by_action: dict[str, list[ActionRecord]] = {}
    for record in pending.records:
        by_action.setdefault(record.action, []).append(record)
    counts = {a: len(r) for a, r in by_action.items()}
    assert counts == {"all": 6, "hot": 5, "two": 5, "tpl": 5}  # NaN > 80 in SQL
    for record in pending.records:
        if record.action != "tpl":
            assert record.encoded().encode() == expected_message(engine, table, record)
    assert by_action["two"][0].key == "a|1"
    tpl = [r.message["payload"] for r in by_action["tpl"]]
    assert tpl[:2] == [{"d": "a", "k": ""}, {"d": "b", "k": ""}]
    # the decoded message of a joined record is the per-row message
    first = by_action["all"][0]
    assert first.message == orjson.loads(expected_message(engine, table, first))

    CheckpointStore(engine.db).commit("p", 3, {}, {}, [engine.outbox_writer(pending, 3)])
    with engine.db.connect() as conn:
        stored = all_actions(conn)
        parts = conn.execute(select(batches.c.action, batches.c.count)).all()
    assert [r["payload"] for r in stored] == [r.encoded() for r in pending.records]
    # one batch per action of the epoch; a replayed epoch adds nothing
    assert sorted(tuple(p) for p in parts) == sorted(counts.items())
    CheckpointStore(engine.db).commit("p", 3, {}, {}, [engine.outbox_writer(pending, 3)])
    assert len(ActionsService(engine.db).list(limit=1000)) == len(pending.records)
    engine.close(drain_seconds=0)


def old_line(delivery: Delivery) -> str:
    """The log line as the per-record code wrote it (the payload decoded, then encoded)."""
    return orjson.dumps(
        {
            "action": delivery.action,
            "pipeline": delivery.pipeline,
            "epoch": delivery.epoch,
            "key": delivery.key,
            "severity": delivery.severity,
            "idempotency_key": delivery.idempotency_key,
            "payload": delivery.payload,
        },
        default=str,
    ).decode()


def test_batched_log_lines_and_outbox_rows_equal_the_per_record_outcome(tmp_path: Path) -> None:
    out = tmp_path / "batched.jsonl"
    engine = make(
        tmp_path,
        [
            {"name": "all", "when": "true", "type": "log", "path": str(out), "key": "device"},
            {"name": "hot", "when": "temp > 80", "type": "log", "path": str(out)},
        ],
    )
    table = scored()
    pending = engine.evaluate(table, EpochContext("p", 3))
    CheckpointStore(engine.db).commit("p", 3, {}, {}, [engine.outbox_writer(pending, 3)])
    assert engine.dispatcher.run_once() == 11  # 6 + 5 (NaN > 80)
    assert engine.dispatcher.run_once() == 0

    with engine.db.connect() as conn:
        rows = [SimpleNamespace(**r) for r in all_actions(conn)]
    # the same log lines, in outbox order, as delivering each row's decoded message
    per_record = [
        old_line(
            Delivery(
                r.id,
                r.pipeline,
                r.action,
                r.epoch,
                r.key,
                r.severity,
                r.idempotency_key,
                orjson.loads(r.payload),
            )
        )
        for r in rows
    ]
    assert out.read_text().splitlines() == per_record
    # each row marked as a per-row update would: delivered, one attempt, no error
    assert [(r.status, r.attempts, r.next_attempt_at, r.last_error) for r in rows] == [
        ("delivered", 1, NOW, None)
    ] * 11
    assert {r.updated_at for r in rows} == {datetime.fromtimestamp(NOW, UTC).replace(tzinfo=None)}
    service = ActionsService(engine.db)
    logged = [service.get(r.id)["attempt_log"] for r in rows]
    assert [
        [(a["outbox_id"], a["attempt"], a["status"], a["error"]) for a in log] for log in logged
    ] == [[(r.id, 1, "delivered", None)] for r in rows]
    assert service.stats()["attempts"]["count"] == 11
    assert all(a["latency_ms"] >= 0 for log in logged for a in log)
    engine.close(drain_seconds=0)


def test_a_delivery_decodes_or_encodes_its_message_on_demand(tmp_path: Path) -> None:
    message = {"payload": {"x": 1, "s": "é\n"}, "subject": "hi"}
    text = orjson.dumps(message).decode()
    from_text = Delivery(1, "p", "a", 2, "k", "info", "key", text=text)
    from_dict = Delivery(1, "p", "a", 2, "k", "info", "key", message)
    assert from_text.message == message and from_text.payload == message["payload"]
    assert from_dict.text == text
    assert Delivery(1, "p", "a", 2, "k", "info", "key").payload is None

    path = tmp_path / "log.jsonl"
    action = LogAction("a", LogOptions(path=str(path)), ActionContext("p"))
    only_payload = Delivery(1, "p", "a", 2, "k", "info", "key", {"payload": [1, None, "z"]})
    empty = Delivery(2, "p", "a", 2, "k", "info", "key", {})
    action.deliver_many([only_payload, empty])
    assert path.read_text().splitlines() == [old_line(only_payload), old_line(empty)]


def test_batch_lines_equal_the_line_of_each_delivery(tmp_path: Path) -> None:
    idem = [format(i, "040x") for i in range(5)]
    keys = ["dev-1", 'quote " and \\', "é\u2028\n", "", "dev-1"]
    messages = [orjson.dumps({"payload": {"x": i, "s": "ü\u2028"}}) for i in range(4)] + [b"{}"]
    stored = [i + k for i, k in zip(idem, keys, strict=True)]
    first = BatchDelivery(7, "p", "a", 3, "critical", stored, messages)
    second = BatchDelivery(12, "p", "b", 4, "info", stored[:2], [b"{}", messages[1]])
    assert first.keys == keys and first.idempotency_keys == idem
    expected = [old_line(d) for batch in (first, second) for d in batch.deliveries()]
    assert bytes(batch_lines([first, second])).decode().split("\n") == [*expected, ""]
    assert batch_lines([]) == b"" == batch_lines([BatchDelivery(1, "p", "a", 1, "info", [], [])])

    path = tmp_path / "nested" / "log.jsonl"
    action = LogAction("a", LogOptions(path=str(path)), ActionContext("p"))
    assert (
        action.batch_group
        == LogAction("b", LogOptions(path=str(path)), ActionContext("p")).batch_group
    )
    action.deliver_batch(first)
    action.deliver_batches([second, first])
    got = path.read_text().split("\n")
    assert got == [*expected[:5], *expected[5:], *expected[:5], ""]


def test_a_batch_waits_behind_its_routes_earlier_retries(tmp_path: Path) -> None:
    """A batch is delivered straight from its row only when nothing older of its route waits."""
    out = tmp_path / "log.jsonl"
    clock = [NOW]
    engine = ActionEngine(
        [ActionConfig(name="all", when="true", type="log", path=str(out), key="device")],
        pipeline="p",
        settings=Settings(home=tmp_path / "home"),
        dispatch=False,
        clock=lambda: clock[0],
    ).start()
    store = CheckpointStore(engine.db)
    table = pa.table({"device": ["a", "b", "a"], "n": [1, 2, 3]})
    store.commit(
        "p", 1, {}, {}, [engine.outbox_writer(engine.evaluate(table, EpochContext("p", 1)), 1)]
    )
    out.mkdir()  # a directory cannot be appended to: epoch 1's rows fail and wait to retry
    assert engine.dispatcher.run_once() > 0
    out.rmdir()
    service = ActionsService(engine.db)
    # each key's oldest row was tried; the later row of key "a" waits behind it untried
    assert sorted((r["status"], r["attempts"]) for r in service.list()) == [
        ("pending", 0),
        ("pending", 1),
        ("pending", 1),
    ]
    store.commit(
        "p", 2, {}, {}, [engine.outbox_writer(engine.evaluate(table, EpochContext("p", 2)), 2)]
    )
    engine.dispatcher.run_once()  # epoch 1 is not due: epoch 2 of the same route waits too
    assert not out.exists()
    clock[0] += 3600
    while engine.dispatcher.run_once():
        pass
    lines = [orjson.loads(line) for line in out.read_text().splitlines()]
    assert [(line["epoch"], line["payload"]["row"]["n"]) for line in lines] == [
        (1, 1),
        (1, 2),
        (1, 3),
        (2, 1),
        (2, 2),
        (2, 3),
    ]
    assert {(r["status"], r["attempts"]) for r in service.list()} == {
        ("delivered", 2),
        ("delivered", 1),
    }
    assert service.stats()["attempts"]["count"] == 2 + 6  # two failures, six deliveries
    engine.close(drain_seconds=0)


def test_an_actions_group_and_records_are_written_in_order_with_the_per_record_keys(
    tmp_path: Path,
) -> None:
    """A rule's columnar group and loose records of the same action land as one action."""
    db = get_engine(str(Settings(home=tmp_path).metadata_url))
    ensure_outbox(db)
    group = RecordGroup("a", "log", "info", "pending", None, [0, 7], ["k0", "k7"], [b"{}", b"{}"])
    loose = [ActionRecord("a", "log", "9", "k9", "info", {"m": 9})]
    other = [ActionRecord("b", "log", "row-x", "kx", "warning", {"m": "x"})]
    pending = PendingActions(other)
    pending.add(group)
    pending.add(loose)
    assert len(pending) == 4 and [r.row for r in pending.records] == ["row-x", "0", "7", "9"]
    CheckpointStore(db).commit("p", 2, {}, {}, [lambda c: write_pending(c, "p", 2, pending, 0.0)])
    with db.connect() as conn:
        rows = as_dicts(conn.execute(select(outbox).order_by(outbox.c.id)))
    assert [(r["action"], r["key"]) for r in rows] == [
        ("b", "kx"),
        ("a", "k0"),
        ("a", "k7"),
        ("a", "k9"),
    ]
    assert [r["idempotency_key"] for r in rows] == [
        idempotency_key("p", "b", 2, "row-x"),
        *(idempotency_key("p", "a", 2, row) for row in ("0", "7", "9")),
    ]


@pytest.mark.parametrize("zone", [None, "UTC", "+00:00", "Etc/UTC"])
def test_timestamps_are_written_as_orjson_writes_their_datetimes(zone: str | None) -> None:
    """Arrow's text of a microsecond timestamp equals orjson's datetime, years 1000-9999."""
    from sluice.actions.engine import _with_iso_times

    rng = np.random.default_rng(3)
    values = np.concatenate(
        [
            rng.integers(-30_610_224_000_000_000, 253_402_300_800_000_000, 3000),
            rng.integers(-(10**13), 10**13, 3000),  # around 1970, before it too
            rng.integers(-(10**7), 10**7, 3000) * 1_000_000,  # whole seconds
        ]
    )
    column = pa.array(values, pa.timestamp("us", tz=zone), mask=rng.random(len(values)) < 0.05)
    written = _with_iso_times(pa.table({"ts": column})).column(0).to_pylist()
    assert written == [
        None if v is None else orjson.loads(orjson.dumps(v)) for v in column.to_pylist()
    ]


@pytest.mark.parametrize("seed", range(40))
def test_batch_parts_are_filled_in_order_up_to_the_size_limit(seed: int) -> None:
    """Messages go into parts of at most PART_BYTES (one oversized message alone), each part
    as full as the next message allows, covering every message once, in order."""
    from sluice.actions.outbox import PART_BYTES, _cuts

    rng = np.random.default_rng(seed)
    sizes = [1, 100, PART_BYTES // 7, PART_BYTES // 2, PART_BYTES, PART_BYTES + 5]
    lengths = rng.choice(sizes, size=int(rng.integers(0, 40))).astype(np.int64)
    parts = list(_cuts(lengths))
    assert [i for start, end in parts for i in range(start, end)] == list(range(len(lengths)))
    for start, end in parts:
        size = int(lengths[start:end].sum())
        assert end - start == 1 or size <= PART_BYTES
        if end < len(lengths):  # the next message did not fit
            assert size + int(lengths[end]) > PART_BYTES


def test_packed_messages_unpack_to_the_messages_and_plain_parts_still_read() -> None:
    """Small parts are stored as their text; larger ones as one Zstandard frame, smaller
    than the text; both (and text written before packing existed) unpack to the messages."""
    from sluice.actions.outbox import pack_messages, unpack_messages

    rng = np.random.default_rng(5)
    small = [orjson.dumps({"payload": {"i": i}}) for i in range(3)]
    large = [
        orjson.dumps({"payload": {"i": i, "x": float(x), "s": "é\n" * int(x * 10)}})
        for i, x in enumerate(rng.random(2000))
    ]
    packed_small, packed_large = pack_messages(small), pack_messages(large)
    assert packed_small == b"\n".join(small)
    assert packed_large[:4] == b"\x28\xb5\x2f\xfd"
    assert len(packed_large) < len(b"\n".join(large)) / 3
    assert unpack_messages(packed_small) == small
    assert unpack_messages(memoryview(packed_large)) == large
    assert unpack_messages(b"\n".join(large)) == large  # a part stored as text


def many_rows() -> pa.Table:
    """``scored()`` 40 times over: parts large enough to be packed."""
    table = scored()
    return pa.concat_tables([table] * 40)


def test_remembered_batches_are_delivered_as_read_back_ones(tmp_path: Path) -> None:
    """After a commit the dispatcher delivers the parts just written from memory: the same
    lines as a dispatcher that reads them back; a remembered part that does not match its
    stored row is not used."""
    from sqlalchemy import update

    rules = [
        {"name": "all", "when": "true", "type": "log", "key": "device"},
        {"name": "hot", "when": "temp > 80", "type": "log"},
    ]
    table, lines = many_rows(), {}
    for name in ("remembered", "read", "stale"):
        out = tmp_path / f"{name}.jsonl"
        engine = make(tmp_path / name, [{**r, "path": str(out)} for r in rules])
        pending = engine.evaluate(table, EpochContext("p", 3))
        writer = engine.outbox_writer(pending, 3)
        CheckpointStore(engine.db).commit("p", 3, {}, {}, [writer])
        with engine.db.begin() as conn:
            stored = conn.execute(select(batches.c.messages)).scalars().all()
            assert all(bytes(s)[:4] == b"\x28\xb5\x2f\xfd" for s in stored)  # packed
            if name == "remembered":  # stored messages it must not read
                conn.execute(update(batches).values(messages=b'{"payload":"stored"}'))
        if name == "stale":
            for part in engine._written:
                part.epoch = 2  # as if written for another epoch
        if name != "read":
            engine.notify()
        assert engine.dispatcher.run_once() == len(pending)
        assert not engine.dispatcher._recent  # delivered: forgotten
        lines[name] = out.read_text().splitlines()
        engine.close(drain_seconds=0)
    assert len(lines["read"]) == 240 + 200  # NaN > 80 in SQL
    assert lines["remembered"] == lines["read"] == lines["stale"]
