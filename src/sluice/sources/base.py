"""The source protocol: poll Arrow batches and report positions that a restart resumes from.

A source produces raw rows. Text formats (``json``, ``csv``) arrive as one ``_raw`` string
column holding the line; typed sources (``arrow``: Parquet, the generator) arrive as typed
columns. Either way a ``__origin`` string column may say where each row came from
(``file.jsonl:42``, ``topic/3@1500``) for the dead-letter store; a partition's batch in the
partitioned runner carries just the offsets there, and the epoch context names the
partition (``EpochContext.origin_prefix``). The decode stage turns raw rows into the
pipeline's schema.

Positions are JSON-serialisable dicts. ``poll(until=...)`` must return exactly the rows up
to ``until`` (the runner uses it to replay an epoch whose sinks may already hold it).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import pyarrow as pa
from pydantic import BaseModel, ValidationError

from sluice.config.models import SourceConfig
from sluice.core.errors import ConfigError
from sluice.core.plugins import load_plugin
from sluice.core.types import parse_duration

Position = dict[str, Any]
Options = TypeVar("Options", bound=BaseModel)
RebalanceHandler = Callable[[list[str]], None]
OffsetLookup = Callable[[list[str]], dict[str, int]]

BUILTIN_SOURCES = {
    "file": "sluice.sources.file:FileSource",
    "generator": "sluice.sources.generator:GeneratorSource",
    "log": "sluice.sources.log:LogSource",
    "kafka": "sluice.sources.kafka:KafkaSource",
    "sql": "sluice.sources.sql:SqlSource",
    "mqtt": "sluice.sources.mqtt:MqttSource",
    "http": "sluice.sources.http:HttpSource",
}


@dataclass
class SourceBatch:
    """Rows read by one poll and the position just after them."""

    data: pa.Table
    raw_format: str  # "json" | "csv" | "arrow"
    position: Position


@dataclass
class SourceContext:
    """What a source may need from the runtime."""

    pipeline: str
    home: str
    group: str | None = None  # consumer group (Kafka)
    idle_timeout: float = 10.0


@dataclass(frozen=True)
class Partitioning:
    """How a partitioned source spreads records: partition count and the fields that decide it."""

    partitions: int
    key: tuple[str, ...] | None  # None: records are not known to be partitioned by any field
    topics: tuple[str, ...] = ()


class Source(ABC):
    """Reads events in batches; resumable from a position.

    Capability flags the runners read: ``partitioned`` (a ``PartitionedSource``, run as one
    task per partition) and ``prefetch_safe`` (the runner may poll the next batch on another
    thread while one is processed).
    """

    partitioned: ClassVar[bool] = False
    prefetch_safe: ClassVar[bool] = False

    def __init__(self, config: SourceConfig, context: SourceContext) -> None:
        self.config = config
        self.context = context

    @abstractmethod
    def open(self, position: Position | None) -> None:
        """Start reading at ``position`` (None: from the beginning)."""

    @abstractmethod
    def poll(
        self, max_rows: int, timeout: float, until: Position | None = None
    ) -> SourceBatch | None:
        """Return up to ``max_rows`` rows, or None when nothing arrived within ``timeout``."""

    @property
    @abstractmethod
    def exhausted(self) -> bool:
        """True when a bounded source has nothing more to read (for ``--until-idle``)."""

    def commit(self, position: Position) -> None:  # noqa: B027 - optional hook
        """Called after a checkpoint holding ``position`` is durable (e.g. commit offsets)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and files."""

    def lag(self) -> dict[str, Any]:
        """Per-partition backlog where the source can tell (empty when unknown)."""
        return {}


class PartitionedSource(Source):
    """A source read as one task per partition (Kafka): the partitioned runner's hooks."""

    partitioned: ClassVar[bool] = True

    @abstractmethod
    def set_rebalance_listener(
        self, on_revoke: RebalanceHandler, on_assign: RebalanceHandler
    ) -> None:
        """Call ``on_revoke(keys)`` before partitions go and ``on_assign(keys)`` after."""

    @abstractmethod
    def set_offset_lookup(self, lookup: OffsetLookup) -> None:
        """Ask ``lookup(keys)`` for the start offsets of partitions as they are assigned."""

    @abstractmethod
    def name_origins_by_offset(self) -> None:
        """Leave ``__origin`` out of polls; ``split`` gives each partition's offsets."""

    def partitioning(self) -> Partitioning | None:
        """How records are spread over partitions (None: unknown, no check is made)."""
        return None

    @abstractmethod
    def split(self, batch: SourceBatch) -> dict[str, tuple[SourceBatch, pa.Array]]:
        """Cut ``batch`` into one batch per partition key, with each row's offset."""


def source_class(config: SourceConfig) -> type[Source]:
    """The class of the source named by ``config.type``."""
    cls: type[Source] = load_plugin("sources", config.type, BUILTIN_SOURCES)
    return cls


def create_source(config: SourceConfig, context: SourceContext) -> Source:
    """Instantiate the source named by ``config.type``."""
    return source_class(config)(config, context)


def validate_options(model: type[Options], options: dict[str, Any]) -> Options:
    """``model`` built from a source's options; its first error as a ConfigError naming the key."""
    try:
        return model.model_validate(options)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ConfigError(first["msg"], key=f"source.{where}" if where else "source") from None


def check_duration(value: str) -> str:
    """``value`` if it is a duration (``500ms``, ``10s``, ``1m``...), else a ValueError."""
    try:
        parse_duration(value)
    except ConfigError as exc:
        raise ValueError(exc.detail) from None
    return value
