"""Counters of a pipeline run: events in/out, filtered, dead-lettered, rate."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sluice.core.metrics import record_epoch


@dataclass
class RunStats:
    """What a run did; ``events_in == events_out + filtered + dead_lettered + aggregated``."""

    pipeline: str
    events_in: int = 0
    events_out: int = 0
    filtered: int = 0
    dead_lettered: int = 0
    aggregated: int = 0
    epochs: int = 0
    sink_retries: int = 0
    extra: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.perf_counter)
    seconds: float = 0.0
    busy_seconds: float = 0.0

    def add_epoch(
        self, rows_in: int, rows_out: int, counters: Counter[str], seconds: float
    ) -> None:
        """Fold one epoch's counts in (and into the process's Prometheus counters)."""
        record_epoch(
            self.pipeline,
            rows_in,
            rows_out,
            counters.get("dead_lettered", 0),
            counters.get("filtered", 0),
        )
        self.epochs += 1
        self.events_in += rows_in
        self.events_out += rows_out
        self.filtered += counters.get("filtered", 0)
        self.dead_lettered += counters.get("dead_lettered", 0)
        self.aggregated += counters.get("aggregated", 0)
        for key, value in counters.items():
            if key not in ("filtered", "dead_lettered", "aggregated"):
                self.extra[key] += value
        self.busy_seconds += seconds
        self.seconds = time.perf_counter() - self.started

    def finish(self) -> None:
        """Stamp the wall-clock duration."""
        self.seconds = time.perf_counter() - self.started

    @property
    def rate(self) -> float:
        """Events in per wall-clock second."""
        return self.events_in / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly summary."""
        return {
            "events_in": self.events_in,
            "events_out": self.events_out,
            "filtered": self.filtered,
            "dead_lettered": self.dead_lettered,
            "aggregated": self.aggregated,
            "epochs": self.epochs,
            "sink_retries": self.sink_retries,
            "seconds": round(self.seconds, 3),
            "events_per_second": round(self.rate, 1),
            **dict(self.extra),
        }
