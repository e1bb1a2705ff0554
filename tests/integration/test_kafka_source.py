"""KafkaSource against a real tansu broker: batches, positions, replay, commits, poison."""

from __future__ import annotations

import time
import uuid

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from sluice.config.models import FieldSpec, SourceConfig
from sluice.connectors.kafka import produce_records
from sluice.core.context import EpochContext
from sluice.core.errors import ConfigError
from sluice.sources.base import Position, SourceBatch, SourceContext
from sluice.sources.decode import Decoder
from sluice.sources.kafka import KafkaSource
from tests.kafka_broker import kafka_broker_fixture, new_topic  # noqa: F401

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]


def events(count: int, start: int = 0) -> list[tuple[bytes, bytes | None]]:
    """``count`` JSON telemetry events keyed by device (deterministic)."""
    return [
        (
            orjson.dumps({"i": i, "device_id": f"d{i % 7}", "temperature": 20.0 + i % 13}),
            f"d{i % 7}".encode(),
        )
        for i in range(start, start + count)
    ]


def make_source(
    bootstrap: str,
    topic: str,
    group: str | None = None,
    idle_timeout: float = 10.0,
    **options: object,
) -> KafkaSource:
    """A Kafka source for ``topic`` in its own (or the given) consumer group."""
    config = SourceConfig(type="kafka", topic=topic, bootstrap_servers=bootstrap, **options)
    context = SourceContext(
        pipeline="p",
        home="/nonexistent",
        group=group or f"g-{uuid.uuid4().hex[:8]}",
        idle_timeout=idle_timeout,
    )
    return KafkaSource(config, context)


def read(
    source: KafkaSource,
    rows: int,
    max_rows: int = 1000,
    until: Position | None = None,
    seconds: float = 60.0,
) -> list[SourceBatch]:
    """Poll until ``rows`` rows arrived (or, with ``until``, the position reached it)."""
    batches: list[SourceBatch] = []
    got = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if until is None and got >= rows:
            break
        batch = source.poll(max_rows, 0.5, until=until)
        if batch is not None:
            batches.append(batch)
            got += batch.data.num_rows
            if until is not None and batch.position == until:
                break
    return batches


def ids(batches: list[SourceBatch]) -> list[int]:
    """The ``i`` field of every JSON payload read."""
    raws = [r for b in batches for r in b.data.column("_raw").to_pylist()]
    return [orjson.loads(r)["i"] for r in raws]


def test_reads_every_event_once_in_bounded_batches(kafka_broker: str) -> None:
    topic = new_topic(kafka_broker, partitions=3)
    produce_records(kafka_broker, topic, events(3000))
    source = make_source(kafka_broker, topic, include=["partition", "offset", "key"])
    source.open(None)
    try:
        batches = read(source, 3000, max_rows=700)
    finally:
        source.close()
    assert sorted(ids(batches)) == list(range(3000))
    assert all(0 < b.data.num_rows <= 700 for b in batches)
    assert {b.raw_format for b in batches} == {"json"}
    table = pa.concat_tables(b.data for b in batches)
    expected_origin = pc.binary_join_element_wise(
        f"{topic}/",
        table["_partition"].cast(pa.string()),
        "@",
        table["_offset"].cast(pa.string()),
        "",
    )
    assert table["__origin"].to_pylist() == expected_origin.to_pylist()
    assert not any(table["__invalid_utf8"].to_pylist())
    keys = [orjson.loads(r)["device_id"] for r in table["_raw"].to_pylist()]
    assert table["_key"].to_pylist() == keys
    offsets = batches[-1].position["offsets"]
    assert set(offsets) == {f"{topic}/{p}" for p in range(3)}
    assert sum(offsets.values()) == 3000


def test_resumes_from_a_position(kafka_broker: str) -> None:
    topic = new_topic(kafka_broker, partitions=2)
    produce_records(kafka_broker, topic, events(2000))
    first = make_source(kafka_broker, topic)
    first.open(None)
    head = read(first, 800, max_rows=400)
    first.close()
    second = make_source(kafka_broker, topic)
    second.open(head[-1].position)
    try:
        tail = read(second, 2000 - sum(b.data.num_rows for b in head))
    finally:
        second.close()
    assert sorted(ids(head) + ids(tail)) == list(range(2000))


def test_until_replays_exactly_the_planned_range_then_continues(kafka_broker: str) -> None:
    topic = new_topic(kafka_broker, partitions=3)
    produce_records(kafka_broker, topic, events(3000))
    original = make_source(kafka_broker, topic)
    original.open(None)
    planned = read(original, 1200, max_rows=600)
    original.close()
    planned_end = planned[-1].position

    replica = make_source(kafka_broker, topic)
    replica.open(None)
    try:
        replayed = read(replica, 0, max_rows=5000, until=planned_end)
        assert replayed[-1].position == planned_end
        assert sorted(ids(replayed)) == sorted(ids(planned))
        rest = read(replica, 3000 - len(ids(replayed)), max_rows=5000)
    finally:
        replica.close()
    assert sorted(ids(replayed) + ids(rest)) == list(range(3000))


def test_commit_makes_a_new_member_start_after_it(kafka_broker: str) -> None:
    topic = new_topic(kafka_broker, partitions=2)
    produce_records(kafka_broker, topic, events(1500))
    group = f"g-{uuid.uuid4().hex[:8]}"
    first = make_source(kafka_broker, topic, group=group)
    first.open(None)
    head = read(first, 500, max_rows=500)
    first.commit(head[-1].position)
    first.close()
    second = make_source(kafka_broker, topic, group=group)
    second.open(None)
    try:
        tail = read(second, 1500 - len(ids(head)))
    finally:
        second.close()
    assert sorted(ids(head) + ids(tail)) == list(range(1500))


def test_poison_messages_become_dead_letters_and_the_partition_flows(
    kafka_broker: str,
) -> None:
    topic = new_topic(kafka_broker, partitions=1)
    huge = b'{"i": 3, "pad": "' + b"x" * 900_000 + b'"'  # truncated: not JSON
    payloads = [
        (b'{"i": 0, "device_id": "a"}', None),
        (b"not json at all", None),
        (b'{"i": 2, "device_id": "\xff\xfe"}', None),
        (huge, None),
        (b'{"i": 4, "device_id": "b"}', None),
    ]
    produce_records(kafka_broker, topic, payloads)
    source = make_source(kafka_broker, topic)
    source.open(None)
    try:
        table = pa.concat_tables(b.data for b in read(source, 5))
    finally:
        source.close()
    assert table.num_rows == 5
    assert table["__invalid_utf8"].to_pylist() == [False, False, True, False, False]
    assert len(table["_raw"][3].as_py()) == len(huge)
    decoder = Decoder({"i": FieldSpec(type="long"), "device_id": FieldSpec(type="string")}, "json")
    ctx = EpochContext("p", 1)
    good = decoder.decode(table, ctx)
    decoder.close()
    assert good["i"].to_pylist() == [0, 4]
    dead = pa.concat_tables(ctx.dead_letters)
    assert dead["origin"].to_pylist() == [f"{topic}/0@1", f"{topic}/0@2", f"{topic}/0@3"]
    assert dead["reason"].to_pylist() == ["malformed JSON", "invalid UTF-8", "malformed JSON"]


def test_idle_after_the_timeout_without_records(kafka_broker: str) -> None:
    topic = new_topic(kafka_broker, partitions=1)
    produce_records(kafka_broker, topic, events(10))
    source = make_source(kafka_broker, topic, idle_timeout=1.0)
    source.open(None)
    try:
        assert ids(read(source, 10)) == list(range(10))
        assert not source.exhausted
        deadline = time.monotonic() + 30
        while not source.exhausted and time.monotonic() < deadline:
            assert source.poll(100, 0.2) is None
        assert source.exhausted
    finally:
        source.close()


def test_csv_messages_become_string_columns(kafka_broker: str) -> None:
    topic = new_topic(kafka_broker, partitions=1)
    lines = [b"d1,20.5", b'"d,2",21', b"only-one-column", b'd3,"unterminated', b"d4,22"]
    produce_records(kafka_broker, topic, [(line, None) for line in lines])
    source = make_source(kafka_broker, topic, format="csv", columns=["device_id", "t"])
    source.open(None)
    try:
        batches = read(source, 5)
    finally:
        source.close()
    table = pa.concat_tables(b.data for b in batches)
    assert batches[0].raw_format == "csv"
    assert table["device_id"].to_pylist() == ["d1", "d,2", None, None, "d4"]
    assert table["t"].to_pylist() == ["20.5", "21", None, None, "22"]
    errors = table["__error"].to_pylist()
    assert errors[0] is None and errors[1] is None and errors[4] is None
    assert errors[2] == "expected 2 CSV columns"
    assert errors[3] == "not a single-line CSV record"


@pytest.mark.parametrize(
    "options, key",
    [
        ({}, "source"),
        ({"topic": "a", "pattern": "b.*"}, "source"),
        ({"topic": "a", "include": ["nope"]}, "source.include.0"),
        ({"topic": "a", "format": "protobuf"}, "source.format"),
        ({"topic": "a", "format": "csv"}, "source.columns"),
    ],
)
def test_bad_options_are_config_errors(options: dict[str, object], key: str) -> None:
    config = SourceConfig(type="kafka", **options)
    with pytest.raises(ConfigError) as info:
        KafkaSource(config, SourceContext(pipeline="p", home="/nonexistent"))
    assert info.value.key == key
