"""KafkaSink against a real tansu broker: JSON records, keys and deterministic headers."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import orjson
import pyarrow as pa
import pytest

from sluice.config.models import SinkConfig
from sluice.connectors.kafka import produce_file
from sluice.core.errors import ConfigError
from sluice.core.settings import Settings
from sluice.sinks.base import SinkContext
from sluice.sinks.kafka import KafkaSink
from tests.integration.test_kafka_source import make_source, read
from tests.kafka_broker import kafka_broker_fixture, new_topic  # noqa: F401

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]


def make_sink(bootstrap: str, topic: str, tmp_path: Path, **options: object) -> KafkaSink:
    """A Kafka sink of pipeline ``p``."""
    config = SinkConfig(type="kafka", topic=topic, bootstrap_servers=bootstrap, **options)
    return KafkaSink(config, SinkContext("p", Settings(home=tmp_path)))


def test_written_rows_read_back_with_keys_and_headers(kafka_broker: str, tmp_path: Path) -> None:
    topic = new_topic(kafka_broker, partitions=2)
    when = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
    table = pa.table(
        {
            "device_id": ["a", "b", "a"],
            "score": [0.5, 1.5, None],
            "ts": pa.array([when] * 3, pa.timestamp("us", tz="UTC")),
        }
    )
    sink = make_sink(kafka_broker, topic, tmp_path, key="device_id")
    assert sink.write(table, epoch=7)
    assert not sink.write(table, epoch=7)
    sink.close()

    source = make_source(kafka_broker, topic, include=["key", "headers"])
    source.open(None)
    try:
        got = pa.concat_tables(b.data for b in read(source, 3))
    finally:
        source.close()
    records = sorted(
        zip(
            got["_raw"].to_pylist(),
            got["_key"].to_pylist(),
            got["_headers"].to_pylist(),
            strict=True,
        ),
        key=lambda r: dict(r[2])["sluice-row"],
    )
    assert [orjson.loads(r[0]) for r in records] == [
        {"device_id": "a", "score": 0.5, "ts": "2024-05-01T12:00:00.000000Z"},
        {"device_id": "b", "score": 1.5, "ts": "2024-05-01T12:00:00.000000Z"},
        {"device_id": "a", "score": None, "ts": "2024-05-01T12:00:00.000000Z"},
    ]
    assert [r[1] for r in records] == ["a", "b", "a"]
    assert [dict(r[2]) for r in records] == [
        {"sluice-pipeline": b"p", "sluice-epoch": b"7", "sluice-row": str(i).encode()}
        for i in range(3)
    ]


def test_missing_key_column_is_a_config_error(kafka_broker: str, tmp_path: Path) -> None:
    sink = make_sink(kafka_broker, "unused", tmp_path, key="nope")
    with pytest.raises(ConfigError, match="'nope'"):
        sink.write(pa.table({"a": [1]}), epoch=1)
    sink.close()


def test_produce_file_sends_json_lines_and_csv_rows(kafka_broker: str, tmp_path: Path) -> None:
    topic = new_topic(kafka_broker, partitions=1)
    jsonl = tmp_path / "e.jsonl"
    jsonl.write_text('{"device_id": "a", "t": 1}\n\nnot json\n{"device_id": "b", "t": 2}\n')
    csv_file = tmp_path / "e.csv"
    csv_file.write_text("device_id,t\nc,3\n")
    assert produce_file(kafka_broker, topic, jsonl, key="device_id") == 3
    assert produce_file(kafka_broker, topic, csv_file, key="device_id", format="csv") == 1
    source = make_source(kafka_broker, topic, include=["key"])
    source.open(None)
    try:
        got = pa.concat_tables(b.data for b in read(source, 4))
    finally:
        source.close()
    assert got["_raw"].to_pylist() == [
        '{"device_id": "a", "t": 1}',
        "not json",
        '{"device_id": "b", "t": 2}',
        '{"device_id":"c","t":"3"}',
    ]
    assert got["_key"].to_pylist() == ["a", None, "b", "c"]
