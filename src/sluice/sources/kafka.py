"""Source of ``type: kafka``: a consumer-group member reading topics into Arrow batches.

Options: ``topic`` (one or a list) or ``pattern``; ``bootstrap_servers``; ``group``
(default ``sluice-<pipeline>``; ``sluice run --group`` overrides); ``format`` (``json`` or
``csv`` with ``columns``); ``include`` (any of key, headers, topic, partition, offset,
timestamp, as columns ``_key``, ``_headers``, ``_topic``, ``_partition``, ``_offset``,
``_kafka_ts``); ``consumer`` (extra librdkafka settings); ``session_timeout_ms``;
``repartition: {key: FIELD, partitions: N}`` (route records through the internal topic
``<pipeline>-repartition`` keyed by ``FIELD`` first; see ``sluice.sources.repartition``).

``format: avro`` reads Avro payloads into typed columns: raw datums with ``schema`` (an
``.avsc`` path or a mapping), or the Confluent wire format with ``schema_registry: {url}``
(any Confluent-compatible registry; ``schema`` then is the reader schema). JSON payloads may
be validated against a ``json_schema``. Messages that fail are dead-lettered with the
reason; see ``kafka_formats``.

Offsets are never auto-committed: ``commit(position)`` commits them after the checkpoint.
A position is ``{"offsets": {"topic/partition": next offset}}`` for the partitions this
member holds. On assignment each partition starts at the checkpoint's offset when it has
one, else at the group's committed offset (or, outside the partitioned runner, where this
member stopped reading it if that is later: a commit may have failed in a broker outage),
else at the earliest record. Rebalancing is cooperative (incremental);
``set_rebalance_listener`` lets the runner act before partitions go away, and
``set_offset_lookup`` lets it supply a start offset per partition from its per-partition
checkpoints when partitions arrive (the partitioned runner's checkpoints are then the
only authority). Every batch has the bookkeeping columns ``__task`` (``topic/partition``)
and ``__offset``; ``split`` cuts a batch into one batch per partition for the partitioned
runner (which has ``name_origins_by_offset`` keep the offsets as ``__origin``, formatted
only for dead letters). ``exhausted`` is time based (no records for ``idle_timeout``
seconds), because some brokers (tansu) report wrong watermarks; a broker outage does not
count as idle time.
"""

from __future__ import annotations

import gc
import logging
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sluice.config.models import SourceConfig
from sluice.connectors.kafka import DEFAULT_BOOTSTRAP, client_config, kafka_module
from sluice.core.errors import ConfigError, SourceError
from sluice.sources.base import (
    OffsetLookup,
    PartitionedSource,
    Partitioning,
    Position,
    RebalanceHandler,
    SourceBatch,
    SourceContext,
)
from sluice.sources.kafka_formats import (
    FORMATS,
    RAW_FORMATS,
    PayloadFormat,
    RegistryOptions,
    check_format_options,
    payload_format,
)
from sluice.sources.lines import decode_utf8
from sluice.sources.repartition import (
    Forwarder,
    RepartitionOptions,
    internal_topic,
    origin_columns,
)

log = logging.getLogger("sluice.sources.kafka")

IncludeName = Literal["key", "headers", "topic", "partition", "offset", "timestamp"]
TASK_COLUMN = "__task"
OFFSET_COLUMN = "__offset"
ORIGIN_COLUMN = "__origin"
MAX_CONSUME = 1_000_000  # librdkafka's upper bound for one consume() call
ERROR_HISTORY = 100
JOIN_GRACE_S = 30.0  # extra idle time allowed for joining the group
QUEUED_MIN_MESSAGES = 1_000_000
PROBE_TIMEOUT_S = 2.0  # how long a reachability check waits for the broker
MIN_RUN_ROWS = 1_000  # a split slices runs of a partition's records at least this long on average


class KafkaOptions(BaseModel):
    """The ``source:`` keys of a Kafka source."""

    model_config = ConfigDict(extra="forbid")

    topic: str | list[str] | None = None
    pattern: str | None = None
    bootstrap_servers: str = DEFAULT_BOOTSTRAP
    group: str | None = None
    include: list[IncludeName] = Field(default_factory=list)
    columns: list[str] | None = None
    consumer: dict[str, Any] = Field(default_factory=dict)
    session_timeout_ms: int = Field(default=6000, gt=0)
    assignor: Literal["cooperative-sticky", "range", "roundrobin"] = "cooperative-sticky"
    repartition: RepartitionOptions | None = None
    keyed_by: str | list[str] | None = None  # the fields every record's Kafka key is made of
    avro_schema: str | dict[str, Any] | list[Any] | None = Field(default=None, alias="schema")
    schema_registry: RegistryOptions | None = None
    json_schema: str | dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_subscription(self) -> KafkaOptions:
        if (self.topic is None) == (self.pattern is None):
            raise ValueError("a kafka source needs exactly one of 'topic' or 'pattern'")
        if isinstance(self.topic, list) and not self.topic:
            raise ValueError("'topic' must name at least one topic")
        return self

    @property
    def subscription(self) -> list[str]:
        """Topics (or the ``^``-anchored pattern) to subscribe to."""
        if self.pattern is not None:
            return [self.pattern if self.pattern.startswith("^") else "^" + self.pattern]
        return [self.topic] if isinstance(self.topic, str) else list(self.topic or [])


def parse_options(config: SourceConfig) -> KafkaOptions:
    """Validate the Kafka keys of ``config`` (ConfigError naming the bad key)."""
    fmt = config.format or "json"
    if fmt not in FORMATS:
        raise ConfigError(
            f"kafka source format {fmt!r}: expected json, csv or avro", key="source.format"
        )
    try:
        options = KafkaOptions.model_validate(config.options)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(
            f"kafka source: {first['msg']}", key=f"source.{where}" if where else "source"
        ) from None
    if fmt == "csv" and not options.columns:
        raise ConfigError(
            "a csv kafka source needs 'columns: [...]' (messages carry no header)",
            key="source.columns",
        )
    check_format_options(fmt, options)
    return options


def _fields(value: str | list[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def partition_key(topic: str, partition: int) -> str:
    """``topic/partition``: how positions name a partition."""
    return f"{topic}/{partition}"


def split_key(key: str) -> tuple[str, int]:
    """Inverse of ``partition_key``."""
    topic, _, partition = key.rpartition("/")
    return topic, int(partition)


class KafkaSource(PartitionedSource):
    """Consumes topics as a consumer-group member; offsets follow the pipeline checkpoint."""

    def __init__(self, config: SourceConfig, context: SourceContext) -> None:
        super().__init__(config, context)
        self.options = parse_options(config)
        self.format = config.format or "json"
        self.payloads = payload_format(self.format, self.options)
        self.group = context.group or self.options.group or f"sluice-{context.pipeline}"
        self._kafka = kafka_module("the Kafka source")
        self._consumer: Any = None
        self._forwarder: Forwarder | None = None
        self._checkpoint: dict[str, int] = {}
        self._positions: dict[str, int] = {}
        self._released: dict[str, int] = {}  # next offsets of partitions that went away
        self._assigned: set[str] = set()
        self._paused: list[Any] = []
        self._revoked: list[str] = []
        self._newly_assigned: list[str] = []
        self._on_revoke: RebalanceHandler | None = None
        self._on_assign: RebalanceHandler | None = None
        self._offset_lookup: OffsetLookup | None = None
        self._last_activity = time.monotonic()
        self._broker_down = False
        self.errors: list[str] = []
        self._origin_offsets = False

    # -- lifecycle -------------------------------------------------------------------
    def _consumer_config(self) -> dict[str, Any]:
        config = client_config(
            self.options.bootstrap_servers,
            self.options.consumer,
            group_id=self.group,
            enable_auto_commit=False,
            enable_auto_offset_store=False,
            auto_offset_reset="earliest",
            session_timeout_ms=self.options.session_timeout_ms,
            partition_assignment_strategy=self.options.assignor,
            # librdkafka stops fetching at 100k queued messages and then waits
            # fetch.queue.backoff.ms (1 s): that pause, not the broker, caps a default consumer
            # (benchmarks/kafka.py). Memory stays bounded by queued.max.messages.kbytes.
            queued_min_messages=QUEUED_MIN_MESSAGES,
        )
        config.update({"logger": log, "error_cb": self._on_client_error})
        return config

    def open(self, position: Position | None) -> None:
        """Join the group; partitions start at ``position``'s offsets where it has them."""
        self._checkpoint = _offsets_of(position)
        self._positions = {}
        self._consumer = self._kafka.Consumer(self._consumer_config())
        subscription = self.options.subscription
        if self.options.repartition is not None:
            self._forwarder = Forwarder(
                self._kafka,
                self.options.repartition,
                bootstrap=self.options.bootstrap_servers,
                subscription=subscription,
                group=self.group,
                pipeline=self.context.pipeline,
                consumer=self.options.consumer,
                session_timeout_ms=self.options.session_timeout_ms,
            )
            subscription = [self._forwarder.topic]
        self._consumer.subscribe(
            subscription,
            on_assign=self._assign_cb,
            on_revoke=self._revoke_cb,
            on_lost=self._lost_cb,
        )
        self._last_activity = time.monotonic()

    def close(self) -> None:
        """Leave the group (revoking the partitions) and close the connection."""
        if self._forwarder is not None:
            forwarder, self._forwarder = self._forwarder, None
            forwarder.close()
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            consumer.close()

    def partitioning(self) -> Partitioning:
        """The subscribed topics' partition count and the fields their records are keyed by."""
        if self.options.repartition is not None:
            topic = internal_topic(self.context.pipeline)
            count = self.options.repartition.partitions or 2  # default: as many as the input
            return Partitioning(count, (self.options.repartition.key,), (topic,))
        admin = self._kafka.admin.AdminClient(client_config(self.options.bootstrap_servers))
        try:
            topics = admin.list_topics(timeout=PROBE_TIMEOUT_S * 5).topics
        except self._kafka.KafkaException as exc:
            raise SourceError(f"kafka source: cannot read topic metadata: {exc}") from None
        if self.options.pattern is not None:
            pattern = re.compile(self.options.subscription[0])
            names = sorted(t for t in topics if pattern.match(t))
        else:
            names = [t for t in self.options.subscription if t in topics]
        count = sum(len(topics[t].partitions) for t in names)
        keyed_by = self.options.keyed_by
        key = None if keyed_by is None or len(names) > 1 else _fields(keyed_by)
        return Partitioning(count, key, tuple(names))

    # -- rebalancing -----------------------------------------------------------------
    def set_rebalance_listener(
        self, on_revoke: RebalanceHandler, on_assign: RebalanceHandler
    ) -> None:
        """Call ``on_revoke(keys)`` before partitions go and ``on_assign(keys)`` after."""
        self._on_revoke, self._on_assign = on_revoke, on_assign

    def set_offset_lookup(self, lookup: OffsetLookup) -> None:
        """Ask ``lookup(keys)`` for the start offsets of partitions as they are assigned."""
        self._offset_lookup = lookup

    def name_origins_by_offset(self) -> None:
        """Leave ``__origin`` out of polls; ``split`` makes each partition's offsets its origin.

        A partition's records then carry their offset (int64) as ``__origin``, and whoever
        processes them names the partition (``EpochContext.origin_prefix``): no string is
        built per record for the rare dead letter.
        """
        self._origin_offsets = True

    def assigned_partitions(self) -> list[str]:
        """Partitions (``topic/partition``) this member holds now."""
        return sorted(self._assigned)

    def revoked_partitions(self) -> list[str]:
        """Partitions revoked since the last call (then forgotten)."""
        revoked, self._revoked = self._revoked, []
        return revoked

    def newly_assigned_partitions(self) -> list[str]:
        """Partitions assigned since the last call (then forgotten)."""
        assigned, self._newly_assigned = self._newly_assigned, []
        return assigned

    def _assign_cb(self, consumer: Any, partitions: list[Any]) -> None:
        keys = [partition_key(tp.topic, tp.partition) for tp in partitions]
        if self._offset_lookup is not None and keys:
            self._checkpoint.update(self._offset_lookup(keys))
        starts = self._start_offsets(consumer, partitions, keys)
        for tp, key in zip(partitions, keys, strict=True):
            if key in starts:
                tp.offset = starts[key]
                self._positions[key] = starts[key]
        if self.options.assignor == "cooperative-sticky":
            consumer.incremental_assign(partitions)
        else:
            consumer.assign(partitions)
        self._assigned.update(keys)
        self._newly_assigned.extend(keys)
        self._last_activity = time.monotonic()
        if keys:
            log.info("assigned %s", ", ".join(keys))
        if self._on_assign is not None and keys:
            self._on_assign(keys)

    def _start_offsets(
        self, consumer: Any, partitions: list[Any], keys: list[str]
    ) -> dict[str, int]:
        """Offsets that override the group's committed ones for newly assigned partitions.

        The checkpoint's offsets come first. A partition this member read before it went
        away (say, the session expired in a broker outage) restarts where this member stopped
        reading when the group's committed offset is behind that: the offset commit may have
        failed during the outage, and the records read are checkpointed or in the batch being
        read, so re-reading them from the group's offset would write them twice.
        """
        starts = {key: self._checkpoint[key] for key in keys if key in self._checkpoint}
        if self._offset_lookup is not None:
            return starts  # uncommitted records were dropped with their task: read them again
        again = [
            (tp, key)
            for tp, key in zip(partitions, keys, strict=True)
            if key not in starts and key in self._released
        ]
        if not again:
            return starts
        try:
            committed = consumer.committed(
                [self._kafka.TopicPartition(tp.topic, tp.partition) for tp, _ in again],
                timeout=PROBE_TIMEOUT_S,
            )
        except self._kafka.KafkaException:
            committed = []
        group = {
            partition_key(tp.topic, tp.partition): tp.offset for tp in committed if tp.error is None
        }
        for _tp, key in again:
            if group.get(key, -1) < self._released[key]:
                starts[key] = self._released[key]
        return starts

    def _revoke_cb(self, consumer: Any, partitions: list[Any]) -> None:
        keys = [partition_key(tp.topic, tp.partition) for tp in partitions]
        self._last_activity = time.monotonic()
        if keys:
            log.info("revoking %s", ", ".join(keys))
        if self._on_revoke is not None and keys:
            self._on_revoke(keys)
        self._forget(keys)
        if self.options.assignor == "cooperative-sticky":
            consumer.incremental_unassign(partitions)
        else:
            consumer.unassign()

    def _lost_cb(self, consumer: Any, partitions: list[Any]) -> None:
        keys = [partition_key(tp.topic, tp.partition) for tp in partitions]
        log.warning("lost %s (session expired); rejoining the group", ", ".join(keys))
        self._revoke_cb(consumer, partitions)

    def _forget(self, keys: list[str]) -> None:
        for key in keys:
            self._assigned.discard(key)
            if key in self._positions:
                self._released[key] = self._positions.pop(key)
            self._checkpoint.pop(key, None)
        self._revoked.extend(keys)

    # -- reading ---------------------------------------------------------------------
    @property
    def position(self) -> Position:
        """Next offset of every partition held and read (or checkpointed) so far."""
        return {"offsets": dict(sorted(self._positions.items()))}

    def poll(
        self, max_rows: int, timeout: float, until: Position | None = None
    ) -> SourceBatch | None:
        """Up to ``max_rows`` records; with ``until``, exactly the records before its offsets."""
        if self._consumer is None:
            raise SourceError("the Kafka source is not open")
        stop = _offsets_of(until) if until is not None else None
        if stop is None and self._paused:
            self._resume_all()
        forwarder = self._forwarder if stop is None else None
        if forwarder is not None and forwarder.forward(max_rows, min(timeout, 0.1)):
            self._last_activity = time.monotonic()
        # A consume() allocates one tracked object per message: the collector would walk
        # them all, so it stays off until they are turned into columns and freed.
        with gc_paused():
            messages = self._consumer.consume(max(1, min(max_rows, MAX_CONSUME)), max(timeout, 0.0))
            messages = self._drop_errors(messages)
            if stop is not None:
                messages = self._clip(messages, stop)
            if not messages:
                return None
            self._last_activity = time.monotonic()
            table = self._table_of(messages)
            del messages
        return SourceBatch(
            data=table,
            raw_format=RAW_FORMATS[self.format],
            position=self.position,
        )

    def _table_of(self, messages: list[Any]) -> pa.Table:
        """The raw table of ``messages`` with the bookkeeping columns; advances positions."""
        columns = MessageColumns.of(messages, self._single_topic)
        self._advance(columns)
        table = build_table(
            columns,
            self.format,
            self.options.columns,
            self.options.include,
            self.payloads,
            origin=not self._origin_offsets,
        )
        table = table.append_column(TASK_COLUMN, columns.task_keys()).append_column(
            OFFSET_COLUMN, pa.array(columns.offsets)
        )
        if self._forwarder is not None:
            for name, column in origin_columns(messages).items():
                table = table.append_column(name, column)
        return table

    def split(self, batch: SourceBatch) -> dict[str, tuple[SourceBatch, pa.Array]]:
        """One batch per partition (position: that partition's) and its records' offsets."""
        data = batch.data
        if TASK_COLUMN not in data.column_names or data.num_rows == 0:
            return {}
        encoded = pc.dictionary_encode(data.column(TASK_COLUMN)).combine_chunks()
        codes = encoded.indices.to_numpy(zero_copy_only=False)
        rest = data.drop_columns([TASK_COLUMN])
        ends = _offsets_of(batch.position)
        out: dict[str, tuple[SourceBatch, pa.Array]] = {}
        keys = encoded.dictionary.to_pylist()
        for key, part in zip(keys, _rows_per_code(rest, codes, len(keys)), strict=True):
            offsets = part.column(OFFSET_COLUMN).combine_chunks()
            end = ends.get(key, int(pc.max(offsets).as_py()) + 1)
            if self._origin_offsets:
                part = part.rename_columns(
                    [ORIGIN_COLUMN if n == OFFSET_COLUMN else n for n in part.column_names]
                )
            else:
                part = part.drop_columns([OFFSET_COLUMN])
            out[key] = (SourceBatch(part, batch.raw_format, {"offsets": {key: end}}), offsets)
        return out

    @property
    def _single_topic(self) -> str | None:
        if self.options.repartition is not None:
            return internal_topic(self.context.pipeline)
        subscription = self.options.subscription
        return subscription[0] if self.options.pattern is None and len(subscription) == 1 else None

    def _advance(self, columns: MessageColumns) -> None:
        """Move each partition's next offset past the last record read from it."""
        for key, last in columns.last_offsets().items():
            self._positions[key] = last + 1

    def _drop_errors(self, messages: list[Any]) -> list[Any]:
        """Messages without an error; errors are logged (fatal ones raise)."""
        errors = list(filter(None, map(self._kafka.Message.error, messages)))
        if not errors:
            return messages
        for error in errors:
            if error.code() == self._kafka.KafkaError._PARTITION_EOF:
                continue
            self._record_error(error)
        return [m for m in messages if m.error() is None]

    def _on_client_error(self, error: Any) -> None:
        self._record_error(error)

    def _record_error(self, error: Any) -> None:
        text = f"{error.name()}: {error.str()}"
        self.errors = [*self.errors[-(ERROR_HISTORY - 1) :], text]
        if error.code() in (
            self._kafka.KafkaError._ALL_BROKERS_DOWN,
            self._kafka.KafkaError._TRANSPORT,
        ):
            self._broker_down = True
        if error.fatal():
            raise SourceError(f"Kafka consumer failed: {text}")
        log.warning("Kafka consumer: %s", text)

    def _clip(self, messages: list[Any], stop: dict[str, int]) -> list[Any]:
        """Keep the records before ``stop``; rewind and pause partitions that reached it.

        Runs only while replaying an epoch after a restart, so a plain loop is fine.
        """
        kept, rewind = [], {}
        for message in messages:
            key = partition_key(message.topic(), message.partition())
            if message.offset() < stop.get(key, -1):
                kept.append(message)
            elif key not in rewind:
                rewind[key] = message.offset()
        for key, offset in rewind.items():
            topic, partition = split_key(key)
            tp = self._kafka.TopicPartition(topic, partition, offset)
            self._consumer.seek(tp)
            self._consumer.pause([tp])
            self._paused.append(tp)
        return kept

    def _resume_all(self) -> None:
        held = [
            tp for tp in self._paused if partition_key(tp.topic, tp.partition) in self._assigned
        ]
        if held:
            self._consumer.resume(held)
        self._paused = []

    @property
    def exhausted(self) -> bool:
        """True when no record arrived (and no assignment changed) for ``idle_timeout`` s.

        While no partition is held (before the first assignment, or after losing them) the
        group join counts too, so the wait is longer then. A broker outage is not idleness:
        after a connection error, the source is not exhausted until the broker answers again,
        and the idle time restarts then.
        """
        idle = time.monotonic() - self._last_activity
        if not self._assigned:
            return idle >= self.context.idle_timeout + JOIN_GRACE_S
        if idle < self.context.idle_timeout:
            return False
        if self._broker_down:
            if not self._broker_reachable():
                return False
            self._broker_down = False
            self._last_activity = time.monotonic()
            return False
        return True

    def _broker_reachable(self) -> bool:
        """True when a broker answers a metadata request."""
        if self._consumer is None:
            return False
        try:
            self._consumer.list_topics(timeout=PROBE_TIMEOUT_S)
        except self._kafka.KafkaException:
            return False
        return True

    def commit(self, position: Position) -> None:
        """Commit ``position``'s offsets of the partitions still held (synchronously)."""
        if self._consumer is None:
            return
        offsets = [
            self._kafka.TopicPartition(*split_key(key), offset)
            for key, offset in _offsets_of(position).items()
            if key in self._assigned
        ]
        if not offsets:
            return
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except self._kafka.KafkaException as exc:
            log.warning("offset commit failed (the checkpoint holds the position): %s", exc)

    def lag(self) -> dict[str, Any]:
        """Best-effort backlog per held partition (broker watermarks may be wrong)."""
        if self._consumer is None:
            return {}
        lag: dict[str, Any] = {}
        for key in sorted(self._assigned):
            topic, partition = split_key(key)
            try:
                _low, high = self._consumer.get_watermark_offsets(
                    self._kafka.TopicPartition(topic, partition), timeout=1.0
                )
            except self._kafka.KafkaException:
                continue
            lag[key] = max(0, high - self._positions.get(key, 0))
        return lag


@contextmanager
def gc_paused() -> Iterator[None]:
    """Suspend the cyclic garbage collector inside the block (it holds no cycles)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _rows_per_code(table: pa.Table, codes: np.ndarray, count: int) -> list[pa.Table]:
    """The rows of ``table`` whose code is 0, 1, ... ``count - 1``, each in their order.

    Consumers hand over each partition's records in long runs (a fetch per partition), so
    the rows are cut out as zero-copy slices of those runs; with short runs a gather is
    cheaper than a table of many tiny chunks.
    """
    starts = np.flatnonzero(np.diff(codes, prepend=-1))
    if len(starts) * MIN_RUN_ROWS > len(codes):
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(count + 1))
        return [table.take(pa.array(order[bounds[c] : bounds[c + 1]])) for c in range(count)]
    stops = np.append(starts[1:], len(codes))
    runs = codes[starts]
    slices = [table.slice(int(a), int(b - a)) for a, b in zip(starts, stops, strict=True)]
    return [pa.concat_tables([slices[i] for i in np.flatnonzero(runs == c)]) for c in range(count)]


def _offsets_of(position: Position | None) -> dict[str, int]:
    """The ``offsets`` of a position, validated."""
    if not position:
        return {}
    offsets = position.get("offsets")
    if not isinstance(offsets, dict):
        raise SourceError(f"not a Kafka position: {position!r}")
    try:
        return {str(key): int(value) for key, value in offsets.items() if split_key(str(key))[0]}
    except ValueError:
        raise SourceError(f"not a Kafka position: {position!r}") from None


# -- Arrow columns from consumed messages ------------------------------------------------
@dataclass
class MessageColumns:
    """Columns of one consume() result, extracted with C-level ``map`` (no Python loop)."""

    messages: list[Any]
    values: list[bytes | None]
    partitions: np.ndarray
    offsets: np.ndarray
    topics: pa.Array | None  # None: every message is from ``topic``
    topic: str | None

    @classmethod
    def of(cls, messages: list[Any], topic: str | None) -> MessageColumns:
        """Extract payloads, partitions, offsets (and topics when several are read)."""
        message = type(messages[0])
        count = len(messages)
        topics = (
            None if topic is not None else pa.array(list(map(message.topic, messages)), pa.string())
        )
        return cls(
            messages,
            list(map(message.value, messages)),
            np.fromiter(map(message.partition, messages), np.int32, count),
            np.fromiter(map(message.offset, messages), np.int64, count),
            topics,
            topic,
        )

    def task_keys(self) -> pa.Array:
        """``topic/partition`` of every message, dictionary-encoded (no string per message)."""
        if self.topics is None:
            unique, codes = np.unique(self.partitions, return_inverse=True)
            names = [partition_key(str(self.topic), int(p)) for p in unique]
        else:
            encoded = self.topics.dictionary_encode()
            topic_names = encoded.dictionary.to_pylist()
            pairs = (encoded.indices.to_numpy().astype(np.int64) << 32) | self.partitions
            unique, codes = np.unique(pairs, return_inverse=True)
            names = [partition_key(topic_names[int(u) >> 32], int(u) & 0xFFFFFFFF) for u in unique]
        return pa.DictionaryArray.from_arrays(
            pa.array(codes.astype(np.int32)), pa.array(names, pa.string())
        )

    def topic_column(self) -> pa.Array:
        """The topic of every message."""
        if self.topics is not None:
            return self.topics
        return pa.repeat(pa.scalar(self.topic, pa.string()), len(self.messages))

    def last_offsets(self) -> dict[str, int]:
        """Highest offset read per ``topic/partition``."""
        if self.topics is None:
            groups = {str(self.topic): np.arange(len(self.messages))}
        else:
            encoded = self.topics.dictionary_encode()
            codes = encoded.indices.to_numpy()
            groups = {
                str(name): np.flatnonzero(codes == code)
                for code, name in enumerate(encoded.dictionary.to_pylist())
            }
        last: dict[str, int] = {}
        for topic, rows in groups.items():
            for partition in np.unique(self.partitions[rows]):
                in_partition = rows[self.partitions[rows] == partition]
                last[partition_key(topic, int(partition))] = int(self.offsets[in_partition].max())
        return last

    def origin(self) -> pa.Array:
        """``topic/partition@offset`` per message."""
        topic = self.topics if self.topics is not None else pa.scalar(self.topic, pa.string())
        return pc.binary_join_element_wise(
            topic,
            "/",
            pa.array(self.partitions).cast(pa.string()),
            "@",
            pa.array(self.offsets).cast(pa.string()),
            "",
        )


def csv_columns(raw: pa.Array, names: list[str]) -> dict[str, pa.Array]:
    """Parse one CSV record per message into string columns (bad records: ``__error``)."""
    count = len(raw)
    quotes = pc.count_substring(pc.fill_null(raw, ""), '"')
    unusable = pc.or_kleene(
        pc.is_null(raw),
        pc.or_(
            pc.match_substring_regex(pc.fill_null(raw, ""), "[\\r\\n]"),
            pc.equal(pc.bit_wise_and(quotes, 1), 1),
        ),
    )
    lines = pc.if_else(unusable, "", raw)
    rejected: list[int] = []

    def on_invalid(row: Any) -> str:
        rejected.append(row.number - 1)
        return "skip"

    joined = pc.binary_join(pa.ListArray.from_arrays([0, count], lines.cast(pa.binary())), b"\n")[0]
    data = pa.py_buffer(joined.as_py() or b"")
    parsed = pa_csv.read_csv(
        data,
        read_options=pa_csv.ReadOptions(column_names=names, use_threads=False),
        parse_options=pa_csv.ParseOptions(invalid_row_handler=on_invalid, ignore_empty_lines=False),
        convert_options=pa_csv.ConvertOptions(
            column_types=dict.fromkeys(names, pa.string()),
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
            null_values=[""],
        ),
    )
    good = np.ones(count, bool)
    good[rejected] = False
    index = np.full(count, -1, np.int64)
    index[good] = np.arange(int(good.sum()))
    take = pa.array(index, mask=index < 0)
    error = pc.if_else(
        unusable,
        "not a single-line CSV record",
        pc.if_else(
            pa.array(good), pa.scalar(None, pa.string()), f"expected {len(names)} CSV columns"
        ),
    )
    out = {name: parsed.column(name).combine_chunks().take(take) for name in names}
    out["__error"] = error
    return out


def include_columns(columns: MessageColumns, include: Sequence[str]) -> dict[str, pa.Array]:
    """The Kafka metadata columns asked for by ``include``."""
    message = type(columns.messages[0])
    out: dict[str, pa.Array] = {}
    if "key" in include:
        out["_key"] = decode_utf8(list(map(message.key, columns.messages)))[0]
    if "headers" in include:
        out["_headers"] = pa.array(
            list(map(message.headers, columns.messages)), pa.map_(pa.string(), pa.binary())
        )
    if "topic" in include:
        out["_topic"] = columns.topic_column()
    if "partition" in include:
        out["_partition"] = pa.array(columns.partitions)
    if "offset" in include:
        out["_offset"] = pa.array(columns.offsets)
    if "timestamp" in include:
        stamps = np.array(list(map(message.timestamp, columns.messages)), np.int64)
        out["_kafka_ts"] = pa.array(stamps[:, 1], pa.int64(), mask=stamps[:, 0] == 0).cast(
            pa.timestamp("ms", tz="UTC")
        )
    return out


def build_table(
    columns: MessageColumns,
    fmt: str,
    csv_names: list[str] | None,
    include: Sequence[str],
    payloads: PayloadFormat | None = None,
    origin: bool = True,
) -> pa.Table:
    """The raw table of one poll: ``_raw`` (json), CSV or Avro columns, metadata, bookkeeping.

    ``origin=False`` leaves out ``__origin`` (``topic/partition@offset`` per record).
    """
    values, decoded = payloads.decode(columns.values) if payloads else (columns.values, {})
    raw, invalid = decode_utf8(values)
    data: dict[str, pa.Array] = dict(decoded)
    if fmt == "csv":
        data.update(csv_columns(raw, csv_names or []))
    data["_raw"] = raw
    data.update(include_columns(columns, include))
    data["__invalid_utf8"] = invalid
    if origin:
        data[ORIGIN_COLUMN] = columns.origin()
    return pa.table(data)
