"""The sink protocol: write one epoch idempotently, so a replayed epoch is skipped.

An epoch is named by its *marks*: ``{stream: epoch}``. A plain pipeline has one stream (its
name); a partitioned pipeline (Kafka) has one stream per partition task
(``pipeline#topic/partition``), each with its own epoch counter, and one write may carry the
epochs of several tasks. A sink records every mark atomically with the rows, and skips a write
when it already holds any of its marks (writes are atomic, so it then holds all of them).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import pyarrow as pa

from sluice.config.models import SinkConfig
from sluice.core.plugins import load_plugin
from sluice.core.settings import Settings

BUILTIN_SINKS = {
    "lake": "sluice.sinks.lake:LakeSink",
    "warehouse": "sluice.sinks.warehouse:WarehouseSink",
    "kafka": "sluice.sinks.kafka:KafkaSink",
}

Marks = Mapping[str, int]


@dataclass
class SinkContext:
    """What a sink needs from the runtime."""

    pipeline: str
    settings: Settings
    event_time: str | None = None


class Sink(ABC):
    """Durably writes batches; ``(pipeline, sink, epoch)`` is written at most once.

    Capability flag: ``exactly_once`` (a fresh instance, after a restart, still skips an epoch
    the destination holds; False means at-least-once across restarts, deduplicable).
    """

    exactly_once: ClassVar[bool] = True

    def __init__(self, config: SinkConfig, context: SinkContext) -> None:
        self.config = config
        self.context = context

    @property
    def sink_id(self) -> str:
        """Identity of this sink within the pipeline (used for idempotency markers)."""
        return f"{self.config.type}:{self.config.table}"

    @abstractmethod
    def write(self, table: pa.Table, epoch: int | Marks) -> bool:
        """Write ``table`` as ``epoch``; return False when the epoch was already there."""

    def marks(self, epoch: int | Marks) -> dict[str, int]:
        """``epoch`` as marks: a plain number is the pipeline's own stream."""
        if isinstance(epoch, int):
            return {self.context.pipeline: epoch}
        if not epoch:
            raise ValueError("a write needs at least one epoch mark")
        return dict(epoch)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


def create_sink(config: SinkConfig, context: SinkContext) -> Sink:
    """Instantiate the sink named by ``config.type``."""
    cls = load_plugin("sinks", config.type, BUILTIN_SINKS)
    sink: Sink = cls(config, context)
    return sink
