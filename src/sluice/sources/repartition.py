"""Repartitioning: route input records through ``<pipeline>-repartition``, keyed by a field.

A pipeline's keyed state (windows, dedupe, per-device models) lives in the partition task
that reads the key. When the input topic is not keyed by that field, the Kafka source with
``repartition: {key: device_id}`` first *forwards* each input batch to the internal topic
``<pipeline>-repartition`` (created with ``partitions`` partitions, default: as many as the
input topic), keyed by the field, with the header ``sluice-origin: topic/partition@offset``;
it commits the input offsets (group ``<group>-repartition``) only after the broker
acknowledged the forwarded records. The pipeline itself then consumes the internal topic, as
Kafka Streams does.

A crash between forwarding and committing forwards some records twice. The partitioned
runner drops them: each task keeps, per origin partition, the highest origin offset it has
processed (checkpointed with the task's state) and skips records at or below it. Forwarding
is in order per origin partition, so this yields exactly-once processing.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from sluice.connectors.kafka import (
    ADMIN_TIMEOUT_S,
    FLUSH_TIMEOUT_S,
    client_config,
    ensure_topic,
    producer_config,
)
from sluice.core.errors import SourceError

log = logging.getLogger("sluice.sources.repartition")
ORIGIN_HEADER = "sluice-origin"
ORIGIN_PARTITION = "__origin_partition"
ORIGIN_OFFSET = "__origin_offset"


class RepartitionOptions(BaseModel):
    """``repartition:`` of a Kafka source."""

    model_config = ConfigDict(extra="forbid")

    key: str
    partitions: int | None = Field(default=None, gt=0)


def internal_topic(pipeline: str) -> str:
    """The repartition topic of ``pipeline``."""
    return f"{pipeline}-repartition"


class Forwarder:
    """Moves input records to the repartition topic, keyed by one JSON field."""

    def __init__(
        self,
        kafka: Any,
        options: RepartitionOptions,
        *,
        bootstrap: str,
        subscription: list[str],
        group: str,
        pipeline: str,
        consumer: dict[str, Any],
        session_timeout_ms: int,
    ) -> None:
        self.kafka = kafka
        self.options = options
        self.topic = internal_topic(pipeline)
        partitions = options.partitions or self._input_partitions(kafka, bootstrap, subscription)
        ensure_topic(bootstrap, self.topic, partitions, consumer)
        self.consumer = kafka.Consumer(
            client_config(
                bootstrap,
                consumer,
                group_id=f"{group}-repartition",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                session_timeout_ms=session_timeout_ms,
                partition_assignment_strategy="cooperative-sticky",
            )
        )
        self.consumer.subscribe(subscription)
        self.producer = kafka.Producer(producer_config(bootstrap, None))

    @staticmethod
    def _input_partitions(kafka: Any, bootstrap: str, subscription: list[str]) -> int:
        admin = kafka.admin.AdminClient(client_config(bootstrap))
        topics = admin.list_topics(timeout=ADMIN_TIMEOUT_S).topics
        counts = [len(topics[t].partitions) for t in subscription if t in topics]
        return max(counts) if counts else 1

    def forward(self, max_rows: int, timeout: float) -> int:
        """Forward up to ``max_rows`` input records; return how many were forwarded."""
        messages = self.consumer.consume(max(1, max_rows), timeout)
        messages = [m for m in messages if m.error() is None]
        if not messages:
            return 0
        keys = self._keys(messages)
        failures: list[str] = []

        def on_delivery(error: Any, _message: Any) -> None:
            if error is not None:
                failures.append(error.str())

        produce = self.producer.produce
        for message, key in zip(messages, keys, strict=True):
            origin = f"{message.topic()}/{message.partition()}@{message.offset()}"
            while True:
                try:
                    produce(
                        self.topic,
                        message.value(),
                        key,
                        headers=[(ORIGIN_HEADER, origin.encode())],
                        on_delivery=on_delivery,
                    )
                    break
                except BufferError:
                    self.producer.poll(0.1)
        if self.producer.flush(FLUSH_TIMEOUT_S) or failures:
            raise SourceError(
                f"forwarding to {self.topic!r} failed: {failures[0] if failures else 'timeout'}"
            )
        self.consumer.commit(asynchronous=False)
        return len(messages)

    def _keys(self, messages: list[Any]) -> list[str | None]:
        """The key field of each JSON payload (None where missing or not JSON)."""
        values = pa.array([m.value() for m in messages], pa.binary()).cast(pa.string(), safe=False)
        con = duckdb.connect()
        try:
            con.register("values_in", pa.table({"v": values}))
            path = "$." + self.options.key
            rows = con.execute(
                "SELECT CASE WHEN try(json_valid(v)) THEN json_extract_string(v, ?) END "
                "FROM values_in",
                [path],
            ).fetchall()
        finally:
            con.close()
        return [r[0] for r in rows]

    def close(self) -> None:
        """Flush the producer and leave the forwarding group."""
        self.producer.flush(FLUSH_TIMEOUT_S)
        self.consumer.close()


def origin_columns(messages: list[Any]) -> dict[str, pa.Array]:
    """``__origin_partition`` and ``__origin_offset`` from the ``sluice-origin`` headers."""
    origins = [_origin(h) for h in map(type(messages[0]).headers, messages)]
    parts = [o.rpartition("@") for o in origins]
    offsets = np.array([int(p[2]) if p[2] else -1 for p in parts], np.int64)
    return {
        ORIGIN_PARTITION: pa.array([p[0] for p in parts], pa.string()),
        ORIGIN_OFFSET: pa.array(offsets),
    }


def _origin(headers: list[tuple[str, bytes]] | None) -> str:
    for name, value in headers or ():
        if name == ORIGIN_HEADER:
            return value.decode()
    return ""


class OriginFilter:
    """Drops records forwarded twice: per origin partition, offsets at or below the last."""

    def __init__(self) -> None:
        self.high: dict[str, int] = {}

    def apply(self, table: pa.Table) -> tuple[pa.Table, int]:
        """``table`` without repeats (and the number dropped); advances the high marks."""
        if ORIGIN_OFFSET not in table.column_names or table.num_rows == 0:
            return table, 0
        parts = table.column(ORIGIN_PARTITION).combine_chunks().dictionary_encode()
        codes = parts.indices.to_numpy(zero_copy_only=False)
        offsets = table.column(ORIGIN_OFFSET).to_numpy()
        keep = np.ones(table.num_rows, bool)
        for code, name in enumerate(parts.dictionary.to_pylist()):
            rows = np.flatnonzero(codes == code)
            seen = np.maximum.accumulate(np.concatenate(([self.high.get(name, -1)], offsets[rows])))
            keep[rows] = offsets[rows] > seen[:-1]
            self.high[name] = int(seen[-1])
        dropped = int((~keep).sum())
        return (table.filter(pa.array(keep)) if dropped else table), dropped

    def state(self) -> bytes:
        """The high marks as JSON."""
        return json.dumps(self.high, sort_keys=True).encode()

    def restore(self, blob: bytes) -> None:
        """Load high marks saved by ``state``."""
        self.high = {str(k): int(v) for k, v in json.loads(blob).items()}
