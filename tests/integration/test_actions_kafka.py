"""The Kafka action produces keyed JSON records to a real (tansu) broker."""

from __future__ import annotations

import time

import orjson
import pyarrow as pa
import pytest

from sluice.actions.engine import ActionEngine
from sluice.actions.service import ActionsService
from sluice.config.models import ActionConfig
from sluice.core.context import EpochContext
from sluice.core.settings import Settings
from sluice.storage.checkpoints import CheckpointStore
from tests.kafka_broker import kafka_broker_fixture, new_topic  # noqa: F401

pytestmark = pytest.mark.kafka


def _consume(bootstrap: str, topic: str, expected: int, timeout: float = 30.0) -> list:  # type: ignore[type-arg]
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"g-{topic}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    out = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                out.append(msg)
    finally:
        consumer.close()
    return out


def test_kafka_action_produces_keyed_records_with_idempotency_header(
    kafka_broker: str, settings: Settings
) -> None:
    topic = new_topic(kafka_broker)
    engine = ActionEngine(
        [
            ActionConfig(
                name="to-kafka",
                when="temp > 80",
                type="kafka",
                bootstrap_servers=kafka_broker,
                topic=topic,
                key="device",
                payload={"device": "{{ device }}", "temp": "{{ temp }}"},
            )
        ],
        pipeline="p",
        settings=settings,
        dispatch=False,
    ).start()
    table = pa.table({"device": ["a", "b", "c"], "temp": [81.0, 20.0, 99.0]})
    pending = engine.evaluate(table, EpochContext("p", 1))
    CheckpointStore(engine.db).commit("p", 1, {}, {}, [engine.outbox_writer(pending, 1)])
    try:
        assert engine.dispatcher.run_once() == 2
    finally:
        engine.close()
    rows = {r["idempotency_key"]: r for r in ActionsService(engine.db).list()}
    assert {r["status"] for r in rows.values()} == {"delivered"}
    messages = _consume(kafka_broker, topic, 2)
    assert sorted(m.key() for m in messages) == [b"a", b"c"]
    for m in messages:
        headers = dict(m.headers() or [])
        assert headers["idempotency-key"].decode() in rows
        assert orjson.loads(m.value())["device"] == m.key().decode()
