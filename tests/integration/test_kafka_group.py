"""Consumer-group behaviour of KafkaSource on tansu: partition split, broker restart."""

from __future__ import annotations

import time
import uuid

import pytest

from sluice.connectors.kafka import produce_records
from sluice.sources.base import SourceBatch
from sluice.sources.kafka import KafkaSource
from tests.integration.test_kafka_source import events, ids, make_source, read
from tests.kafka_broker import (  # noqa: F401
    TansuBroker,
    durable_kafka_broker_fixture,
    kafka_broker_fixture,
    moto_s3_server_fixture,
    new_topic,
)

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]


class Member:
    """A group member that commits after each batch and on revoke (as the runner does)."""

    def __init__(self, source: KafkaSource) -> None:
        self.source = source
        self.batches: list[SourceBatch] = []
        self.revoked: list[str] = []
        self.assigned: list[str] = []
        source.set_rebalance_listener(self._on_revoke, self.assigned.extend)

    def _on_revoke(self, keys: list[str]) -> None:
        self.revoked.extend(keys)
        if self.batches:
            self.source.commit(self.batches[-1].position)

    def poll(self) -> None:
        batch = self.source.poll(500, 0.2)
        if batch is not None:
            self.batches.append(batch)
            self.source.commit(batch.position)


def test_two_members_split_the_partitions_and_read_each_event_once(kafka_broker: str) -> None:
    topic = new_topic(kafka_broker, partitions=4)
    group = f"g-{uuid.uuid4().hex[:8]}"
    produce_records(kafka_broker, topic, events(2000))
    first = Member(make_source(kafka_broker, topic, group=group))
    first.source.open(None)
    while not first.source.assigned_partitions():
        first.poll()
    second = Member(make_source(kafka_broker, topic, group=group))
    second.source.open(None)
    produce_records(kafka_broker, topic, events(2000, start=2000))
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        first.poll()
        second.poll()
        held = [first.source.assigned_partitions(), second.source.assigned_partitions()]
        if all(held) and len(ids(first.batches) + ids(second.batches)) >= 4000:
            break
    try:
        assert all(held), "the second member never got partitions"
        assert sorted(held[0] + held[1]) == [f"{topic}/{p}" for p in range(4)]
        assert set(first.revoked) == set(held[1])
        assert set(second.assigned) == set(held[1])
        assert sorted(ids(first.batches) + ids(second.batches)) == list(range(4000))
    finally:
        first.source.close()
        second.source.close()


def test_source_reconnects_after_a_broker_restart(durable_kafka_broker: TansuBroker) -> None:
    bootstrap = durable_kafka_broker.bootstrap
    topic = new_topic(bootstrap, partitions=2)
    produce_records(bootstrap, topic, events(1000))
    source = make_source(bootstrap, topic)
    source.open(None)
    try:
        before = read(source, 1000)
        source.commit(before[-1].position)
        durable_kafka_broker.restart()
        produce_records(bootstrap, topic, events(1000, start=1000))
        after = read(source, 1000, seconds=90)
    finally:
        source.close()
    assert sorted(ids(before) + ids(after)) == list(range(2000))


def test_committed_offsets_survive_a_broker_restart(durable_kafka_broker: TansuBroker) -> None:
    bootstrap = durable_kafka_broker.bootstrap
    topic = new_topic(bootstrap, partitions=2)
    group = f"g-{uuid.uuid4().hex[:8]}"
    produce_records(bootstrap, topic, events(1000))
    first = make_source(bootstrap, topic, group=group)
    first.open(None)
    head = read(first, 400, max_rows=400)
    first.commit(head[-1].position)
    first.close()
    durable_kafka_broker.restart()
    second = make_source(bootstrap, topic, group=group)
    second.open(None)
    try:
        tail = read(second, 1000 - len(ids(head)), seconds=90)
    finally:
        second.close()
    assert sorted(ids(head) + ids(tail)) == list(range(1000))
