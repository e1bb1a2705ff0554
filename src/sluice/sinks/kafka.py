"""Sink of ``type: kafka``: produce each epoch's rows as JSON records to a topic.

Options: ``topic`` (required), ``bootstrap_servers``, ``key`` (column used as record key),
``producer`` (extra librdkafka settings).

Guarantee, honestly stated: **at-least-once into Kafka**. The producer is idempotent (no
duplicates from its own retries) and ``write`` returns only once the broker acknowledged
every record, so a checkpoint never runs ahead of Kafka. If the process dies after the
records were acknowledged but before the checkpoint, the replayed epoch produces them
again. Every record therefore carries deterministic headers ``sluice-pipeline``,
``sluice-epoch`` (the epoch; ``stream=epoch,...`` for a partitioned pipeline) and
``sluice-row`` (row index within the epoch) and a deterministic key,
so downstream consumers drop repeats by ``(pipeline, epoch, row)``. Exactly-once holds
for the lake and the warehouse (checkpoints + idempotent sinks), not through Kafka.
"""

from __future__ import annotations

import logging
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sluice.config.models import SinkConfig
from sluice.connectors.kafka import (
    DEFAULT_BOOTSTRAP,
    FLUSH_TIMEOUT_S,
    kafka_module,
    producer_config,
)
from sluice.core.errors import ConfigError, TransientSinkError
from sluice.sinks.base import Marks, Sink, SinkContext

log = logging.getLogger("sluice.sinks.kafka")
POLL_EVERY = 10_000


class KafkaSinkOptions(BaseModel):
    """The ``sinks:`` keys of a Kafka sink."""

    model_config = ConfigDict(extra="forbid")

    topic: str
    bootstrap_servers: str = DEFAULT_BOOTSTRAP
    key: str | None = None
    producer: dict[str, Any] = Field(default_factory=dict)


def rows_to_json(table: pa.Table) -> pa.Array:
    """Every row as a JSON object (timestamps in ISO-8601), in one DuckDB pass."""
    if table.num_rows == 0:
        return pa.array([], pa.string())
    fields = []
    for field in table.schema:
        ref = '"' + field.name.replace('"', '""') + '"'
        if pa.types.is_timestamp(field.type):
            ref = f"strftime({ref}, '%Y-%m-%dT%H:%M:%S.%fZ')"
        label = field.name.replace('"', '""')
        fields.append(f'"{label}" := {ref}')
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("batch", table)
        query = f"SELECT to_json(struct_pack({', '.join(fields)}))::VARCHAR FROM batch"
        return con.sql(query).to_arrow_table().column(0).combine_chunks()
    finally:
        con.close()


class KafkaSink(Sink):
    """Produces rows to a topic with an idempotent producer; at-least-once, deduplicable."""

    def __init__(self, config: SinkConfig, context: SinkContext) -> None:
        super().__init__(config, context)
        try:
            self.options = KafkaSinkOptions.model_validate(config.options)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ConfigError(f"kafka sink: {first['msg']}", key=f"sinks.{where}") from None
        self._kafka = kafka_module("the Kafka sink")
        self._failures: list[str] = []
        self._client: Any = None
        self._last_epochs: dict[str, int] = {}

    @property
    def _producer(self) -> Any:
        """The producer, created on first use (the constructor connects to nothing)."""
        if self._client is None:
            settings = producer_config(self.options.bootstrap_servers, self.options.producer)
            settings.update({"delivery.report.only.error": True, "on_delivery": self._on_delivery})
            self._client = self._kafka.Producer(settings)
        return self._client

    @property
    def sink_id(self) -> str:
        """``kafka:<topic>``."""
        return f"kafka:{self.options.topic}"

    def _on_delivery(self, error: Any, _message: Any) -> None:
        self._failures.append(error.str())

    def write(self, table: pa.Table, epoch: int | Marks) -> bool:
        """Produce ``table`` as ``epoch`` and wait for the broker's acknowledgement."""
        marks = self.marks(epoch)
        if any(e <= self._last_epochs.get(s, -1) for s, e in marks.items()):
            return False
        values = rows_to_json(table).to_pylist()
        keys = self._keys(table)
        self._failures = []
        self._produce_all(values, keys, epoch_label(marks, self.context.pipeline))
        if self._producer.flush(FLUSH_TIMEOUT_S) or self._failures:
            detail = self._failures[0] if self._failures else "not acknowledged in time"
            raise TransientSinkError(
                f"producing to Kafka topic {self.options.topic!r} failed: {detail}"
            )
        self._last_epochs.update(marks)
        return True

    def _keys(self, table: pa.Table) -> list[str | None]:
        key = self.options.key
        if key is None:
            return [None] * table.num_rows
        if key not in table.column_names:
            raise ConfigError(
                f"kafka sink key column {key!r} is not in the output "
                f"(columns: {', '.join(table.column_names)})",
                key="sinks.key",
            )
        keys: list[str | None] = pc.cast(table.column(key), pa.string()).to_pylist()
        return keys

    def _produce_all(self, values: list[str], keys: list[str | None], epoch: str) -> None:
        """Queue every record (the one per-record loop: the client API is per record)."""
        pipeline = self.context.pipeline.encode()
        epoch_header = epoch.encode()
        produce, topic = self._producer.produce, self.options.topic
        for row, (value, key) in enumerate(zip(values, keys, strict=True)):
            headers = [
                ("sluice-pipeline", pipeline),
                ("sluice-epoch", epoch_header),
                ("sluice-row", str(row).encode()),
            ]
            while True:
                try:
                    produce(topic, value, key, headers=headers)
                    break
                except BufferError:
                    self._producer.poll(0.1)
            if row % POLL_EVERY == 0:
                self._producer.poll(0)

    def close(self) -> None:
        """Deliver what is still queued."""
        if self._client is None:
            return
        remaining = self._client.flush(FLUSH_TIMEOUT_S)
        if remaining:
            log.warning(
                "%d records to %s were not delivered before close", remaining, self.options.topic
            )


def epoch_label(marks: dict[str, int], pipeline: str) -> str:
    """The ``sluice-epoch`` header: the epoch number, or ``stream=epoch,...`` for tasks."""
    if list(marks) == [pipeline]:
        return str(marks[pipeline])
    return ",".join(f"{stream}={epoch}" for stream, epoch in sorted(marks.items()))
