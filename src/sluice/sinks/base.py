"""The sink protocol: write one epoch idempotently, so a replayed epoch is skipped."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import pyarrow as pa

from sluice.config.models import SinkConfig
from sluice.core.plugins import load_plugin
from sluice.core.settings import Settings

BUILTIN_SINKS = {
    "lake": "sluice.sinks.lake:LakeSink",
    "warehouse": "sluice.sinks.warehouse:WarehouseSink",
    "kafka": "sluice.sinks.kafka:KafkaSink",
}


@dataclass
class SinkContext:
    """What a sink needs from the runtime."""

    pipeline: str
    settings: Settings
    event_time: str | None = None


class Sink(ABC):
    """Durably writes batches; ``(pipeline, sink, epoch)`` is written at most once."""

    def __init__(self, config: SinkConfig, context: SinkContext) -> None:
        self.config = config
        self.context = context

    @property
    def sink_id(self) -> str:
        """Identity of this sink within the pipeline (used for idempotency markers)."""
        return f"{self.config.type}:{self.config.table}"

    @abstractmethod
    def write(self, table: pa.Table, epoch: int) -> bool:
        """Write ``table`` as ``epoch``; return False when the epoch was already there."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


def create_sink(config: SinkConfig, context: SinkContext) -> Sink:
    """Instantiate the sink named by ``config.type``."""
    cls = load_plugin("sinks", config.type, BUILTIN_SINKS)
    sink: Sink = cls(config, context)
    return sink
