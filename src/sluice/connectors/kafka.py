"""Kafka client helpers shared by the Kafka source, sink and CLI: config, topics, produce, lag.

``confluent_kafka`` is imported lazily (extra ``kafka``). Configuration dicts never appear
in log lines or error messages, since they may carry SASL credentials.
"""

from __future__ import annotations

import csv
import importlib
import io
import logging
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import ModuleType
from typing import IO, Any

import orjson

from sluice.core.deps import require
from sluice.core.errors import ConfigError, SourceError, TransientError

log = logging.getLogger("sluice.kafka")

DEFAULT_BOOTSTRAP = "localhost:9092"
PRODUCE_BATCH = 10_000
ADMIN_TIMEOUT_S = 15.0
FLUSH_TIMEOUT_S = 60.0


class TransientKafkaError(SourceError, TransientError):
    """The broker could not be reached or answered with a retriable error."""


def kafka_module(feature: str = "Kafka") -> ModuleType:
    """Import ``confluent_kafka`` (with its ``admin`` module) or fail naming the extra."""
    module = require("confluent_kafka", "kafka", feature)
    importlib.import_module("confluent_kafka.admin")
    return module


def client_config(
    bootstrap: str, extra: dict[str, Any] | None = None, **defaults: Any
) -> dict[str, Any]:
    """librdkafka settings: ``bootstrap.servers``, then ``defaults``, then user ``extra``."""
    config: dict[str, Any] = {"bootstrap.servers": bootstrap}
    config.update({key.replace("_", "."): value for key, value in defaults.items()})
    config.update(extra or {})
    return config


def producer_config(bootstrap: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Settings of an idempotent, batching producer."""
    return client_config(
        bootstrap, extra, enable_idempotence=True, linger_ms=5, compression_type="lz4"
    )


def ensure_topic(
    bootstrap: str,
    topic: str,
    partitions: int = 1,
    extra: dict[str, Any] | None = None,
    topic_config: dict[str, str] | None = None,
) -> bool:
    """Create ``topic`` with ``partitions`` (and ``topic_config``) unless it exists.

    Returns True when the topic was created.
    """
    kafka = kafka_module("Kafka topic administration")
    admin_module = require("confluent_kafka.admin", "kafka", "Kafka topic administration")
    admin = admin_module.AdminClient(client_config(bootstrap, extra))
    if topic in admin.list_topics(timeout=ADMIN_TIMEOUT_S).topics:
        return False
    future = admin.create_topics(
        [admin_module.NewTopic(topic, partitions, 1, config=topic_config or {})]
    )[topic]
    try:
        future.result(ADMIN_TIMEOUT_S)
    except kafka.KafkaException as exc:
        error = exc.args[0]
        if error.code() == kafka.KafkaError.TOPIC_ALREADY_EXISTS:
            return False
        raise SourceError(f"cannot create Kafka topic {topic!r}: {error.str()}") from None
    return True


def _open_input(source: str | Path | IO[bytes]) -> tuple[IO[bytes], bool]:
    """Binary stream for ``source`` (``-``: stdin) and whether the caller must close it."""
    if not isinstance(source, (str, Path)):
        return source, False
    if str(source) == "-":
        return sys.stdin.buffer, False
    path = Path(source)
    if not path.is_file():
        raise ConfigError(f"no such file: {path}")
    return path.open("rb"), True


def _json_records(stream: IO[bytes], key: str | None) -> Iterator[tuple[bytes, bytes | None]]:
    """Each non-blank line as is, with the value of field ``key`` when asked."""
    for number, line in enumerate(stream, start=1):
        payload = line.rstrip(b"\r\n")
        if not payload.strip():
            continue
        yield payload, _key_of(payload, key, number) if key else None


def _key_of(payload: bytes, key: str, number: int) -> bytes | None:
    """The record's ``key`` field as bytes (None when the line is not an object holding it)."""
    try:
        record = orjson.loads(payload)
    except orjson.JSONDecodeError:
        log.warning("line %d is not JSON; producing it without a key", number)
        return None
    value = record.get(key) if isinstance(record, dict) else None
    if value is None:
        return None
    return value.encode() if isinstance(value, str) else orjson.dumps(value)


def _csv_records(stream: IO[bytes], key: str | None) -> Iterator[tuple[bytes, bytes | None]]:
    """Each CSV row (after the header) as a JSON object of strings, keyed by column ``key``."""
    reader = csv.DictReader(io.TextIOWrapper(stream, encoding="utf-8", newline=""))
    if key and reader.fieldnames and key not in reader.fieldnames:
        raise ConfigError(f"key column {key!r} is not in the CSV header")
    for row in reader:
        value = row.get(key) if key else None
        yield orjson.dumps(row), value.encode() if value is not None else None


def produce_records(
    bootstrap: str,
    topic: str,
    records: Iterable[tuple[bytes, bytes | None]],
    extra: dict[str, Any] | None = None,
) -> int:
    """Produce ``(value, key)`` pairs to ``topic``, wait until all are acknowledged; the count."""
    kafka = kafka_module("producing to Kafka")
    failures: list[str] = []

    def on_delivery(error: Any, _message: Any) -> None:
        failures.append(error.str())

    config = producer_config(bootstrap, extra)
    config.update({"delivery.report.only.error": True, "on_delivery": on_delivery})
    producer = kafka.Producer(config)
    count = 0
    for value, key in records:
        _produce_one(producer, topic, value, key)
        count += 1
        if count % PRODUCE_BATCH == 0:
            producer.poll(0)
    if producer.flush(FLUSH_TIMEOUT_S) or failures:
        detail = failures[0] if failures else "not acknowledged in time"
        raise TransientKafkaError(f"producing to {topic!r} failed: {detail}")
    return count


def _produce_one(
    producer: Any,
    topic: str,
    value: bytes,
    key: bytes | None,
    headers: list[tuple[str, bytes]] | None = None,
) -> None:
    """Queue one record, waiting for room when the local queue is full."""
    while True:
        try:
            producer.produce(topic, value, key, headers=headers)
            return
        except BufferError:
            producer.poll(0.1)


def produce_file(
    bootstrap: str,
    topic: str,
    source: str | Path | IO[bytes],
    key: str | None = None,
    format: str = "json",
    extra: dict[str, Any] | None = None,
) -> int:
    """Produce a JSON-lines or CSV file (``-``: stdin) to ``topic``; return the record count.

    JSON lines are sent unchanged (invalid lines too: the pipeline dead-letters them);
    CSV rows become JSON objects of strings. ``key`` names the field used as record key.
    """
    if format not in ("json", "csv"):
        raise ConfigError(f"unknown format {format!r}; expected json or csv")
    stream, owned = _open_input(source)
    try:
        records = _json_records(stream, key) if format == "json" else _csv_records(stream, key)
        return produce_records(bootstrap, topic, records, extra)
    finally:
        if owned:
            stream.close()


def consumer_lag(
    bootstrap: str, group: str, topics: list[str], extra: dict[str, Any] | None = None
) -> dict[str, int]:
    """Best-effort ``{"topic/partition": high watermark - committed offset}`` for ``group``.

    Brokers such as tansu may report wrong watermarks, so this is for display only.
    """
    kafka = kafka_module("Kafka lag")
    consumer = kafka.Consumer(
        client_config(bootstrap, extra, group_id=group, enable_auto_commit=False)
    )
    try:
        metadata = consumer.list_topics(timeout=ADMIN_TIMEOUT_S)
        partitions = [
            kafka.TopicPartition(t, p)
            for t in topics
            if t in metadata.topics
            for p in metadata.topics[t].partitions
        ]
        lag: dict[str, int] = {}
        for tp in consumer.committed(partitions, timeout=ADMIN_TIMEOUT_S):
            _low, high = consumer.get_watermark_offsets(tp, timeout=ADMIN_TIMEOUT_S)
            committed = tp.offset if tp.offset >= 0 else 0
            lag[f"{tp.topic}/{tp.partition}"] = max(0, high - committed)
        return lag
    except kafka.KafkaException as exc:
        log.warning("cannot compute the lag of group %s: %s", group, exc)
        return {}
    finally:
        consumer.close()
