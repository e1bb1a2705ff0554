"""Source of ``type: generator``: deterministic synthetic telemetry or support tickets.

Options (validated; unknown keys are errors): ``kind`` (``telemetry`` | ``tickets``),
``events`` (total rows; null = unbounded), ``devices``, ``seed``, ``rate`` (rows per
second; null = as fast as the pipeline reads), ``start``, ``interval``, ``labels`` (keep the
ground-truth columns), ``regime_change_at`` (fraction of ``events``; needs ``events``),
``anomaly_rate``, ``maintenance_rate``.

Rows are a pure function of ``(options, row index)`` (see :mod:`sluice.sources.synthetic`),
so the position ``{"emitted": n}`` resumes exactly at row ``n`` and a replay with
``until`` returns the very same rows. Rows arrive typed (``raw_format="arrow"``) with
``__origin = "generator:<row index>"``.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, field_validator

from sluice.config.models import SourceConfig
from sluice.core.errors import ConfigError, SourceError
from sluice.core.types import parse_duration
from sluice.sources import synthetic, synthetic_text
from sluice.sources.base import Position, Source, SourceBatch, SourceContext, validate_options

_IDLE_SLEEP = 0.1  # longest nap of a poll that has nothing to give


class GeneratorOptions(BaseModel):
    """Options of the generator source."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["telemetry", "tickets"] = "telemetry"
    events: int | None = Field(default=100_000, ge=0)
    devices: int = Field(default=50, ge=1, le=1_000_000)
    seed: int = Field(default=0, ge=0)
    rate: float | None = Field(default=None, gt=0)
    start: datetime = synthetic.DEFAULT_START
    interval: str = "1s"
    labels: bool = True
    regime_change_at: float | None = Field(default=0.6, ge=0.0, le=1.0)
    anomaly_rate: float = Field(default=0.01, ge=0.0, le=1.0)
    maintenance_rate: float = Field(default=0.02, ge=0.0, le=1.0)

    @field_validator("interval")
    @classmethod
    def _positive_interval(cls, value: str) -> str:
        try:
            delta = parse_duration(value)
        except ConfigError as exc:
            raise ValueError(exc.detail) from None
        if delta.total_seconds() <= 0:
            raise ValueError("interval must be positive")
        return value


def parse_options(config: SourceConfig) -> GeneratorOptions:
    """Validate the generator's options, turning pydantic errors into a ConfigError."""
    options = config.options
    if config.format not in (None, "arrow"):
        raise ConfigError(
            "the generator produces typed rows; drop 'format' or set it to arrow",
            key="source.format",
        )
    return validate_options(GeneratorOptions, options)


class GeneratorSource(Source):
    """Emits deterministic synthetic rows, optionally paced to ``rate`` rows per second."""

    prefetch_safe = True  # the runner may read the next batch while one is processed

    def __init__(self, config: SourceConfig, context: SourceContext) -> None:
        super().__init__(config, context)
        self.options = parse_options(config)
        opts = self.options
        self.spec = synthetic.telemetry_spec(
            opts.events,
            opts.devices,
            opts.seed,
            opts.start,
            opts.interval,
            opts.regime_change_at,
            opts.anomaly_rate,
            opts.maintenance_rate,
            opts.labels,
        )
        self.emitted = 0
        self._paced_from = (time.monotonic(), 0)

    def open(self, position: Position | None) -> None:
        """Continue at row ``position["emitted"]`` (None: row 0)."""
        emitted = 0 if position is None else position.get("emitted")
        if not isinstance(emitted, int) or emitted < 0:
            raise SourceError(f"invalid generator position {position!r}")
        total = self.options.events
        if total is not None and emitted > total:
            raise SourceError(f"generator position {emitted} is past its {total} events")
        self.emitted = emitted
        self._paced_from = (time.monotonic(), emitted)

    def poll(
        self, max_rows: int, timeout: float, until: Position | None = None
    ) -> SourceBatch | None:
        """Return the next rows (exactly up to ``until`` when given; a replay is not paced)."""
        if until is not None:
            count = min(max_rows, int(until["emitted"]) - self.emitted)
        elif self._remaining(max_rows) > 0:
            count = self._paced(self._remaining(max_rows), timeout)
        else:
            time.sleep(min(timeout, _IDLE_SLEEP))  # exhausted: do not let the caller spin
            return None
        if count <= 0:
            return None
        first = self.emitted
        data = self._rows(first, first + count)
        self.emitted = first + count
        return SourceBatch(data=data, raw_format="arrow", position={"emitted": self.emitted})

    @property
    def exhausted(self) -> bool:
        """True once ``events`` rows were emitted (never for an unbounded generator)."""
        total = self.options.events
        return total is not None and self.emitted >= total

    def lag(self) -> dict[str, int]:
        """Rows still to generate (bounded generators only)."""
        total = self.options.events
        return {} if total is None else {"generator": max(0, total - self.emitted)}

    def _remaining(self, max_rows: int) -> int:
        total = self.options.events
        return max_rows if total is None else min(max_rows, total - self.emitted)

    def _paced(self, count: int, timeout: float) -> int:
        """Cap ``count`` at what ``rate`` allows so far, waiting up to ``timeout`` for a row."""
        rate = self.options.rate
        if rate is None:
            return count
        since, base = self._paced_from
        deadline = time.monotonic() + timeout
        while True:
            allowed = int((time.monotonic() - since) * rate) + base - self.emitted
            if allowed > 0:
                return min(count, allowed)
            wait = (self.emitted - base + 1) / rate - (time.monotonic() - since)
            if time.monotonic() + wait > deadline:
                return 0
            time.sleep(max(wait, 0.0))

    def _rows(self, first: int, stop: int) -> pa.Table:
        if self.options.kind == "tickets":
            table = synthetic_text.tickets(
                stop - first, self.options.seed, self.options.start, first
            )
            if not self.options.labels:
                table = table.drop_columns(["category", "urgency"])
        else:
            table = synthetic.telemetry_rows(self.spec, first, stop)
        index = pc.cast(pa.array(np.arange(first, stop, dtype=np.int64)), pa.string())
        origin = pc.binary_join_element_wise("generator:", index, "")
        return table.append_column("__origin", origin)
