"""Drop repeats: a row whose key was already seen within ``window`` of its event time.

Within a batch, rows of one key are ordered by event time (ties by arrival) and a row is
a repeat when the previous one is less than ``window`` earlier; across batches it is a
repeat when the key's latest event time in the state is less than ``window`` away.
The first occurrence is kept. The state holds one latest event time per key and forgets
keys older than ``2 * window`` before the largest event time seen, so it stays bounded
and out-of-order rows up to ``window`` late are still recognised. Rows with a NULL key
or event time are never treated as repeats.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sluice.config.models import DedupeSpec
from sluice.core.context import EpochContext
from sluice.core.errors import ConfigError
from sluice.core.types import duration_us
from sluice.transforms.base import Transform
from sluice.transforms.duck import DuckSQL, from_ipc, optional_int, quote, to_ipc
from sluice.transforms.window import as_list, event_time_us

LAST = "__last"


class DedupeTransform(Transform):
    """Keep the first row per key within an event-time window; drop the repeats."""

    name = "dedupe"

    def __init__(self, spec: DedupeSpec, index: int, event_time: str | None) -> None:
        self.key = f"transforms[{index}].dedupe"
        if not event_time:
            raise ConfigError("dedupe needs the pipeline's 'event_time'", key=self.key)
        self.time = event_time
        self.keys = as_list(spec.key)
        if not self.keys:
            raise ConfigError("dedupe needs at least one key column", key=self.key)
        self.window = duration_us(spec.window)
        if self.window <= 0:
            raise ConfigError("dedupe window must be positive", key=self.key)
        self.duck = DuckSQL(threads=1)
        self._seen: pa.Table | None = None  # key columns + LAST (epoch µs)
        self._max_seen: int | None = None

    def apply(self, table: pa.Table, ctx: EpochContext) -> pa.Table:
        """Return the batch without repeats; count them as ``deduplicated`` and ``filtered``."""
        if table.num_rows == 0:
            return table
        missing = [c for c in [*self.keys, self.time] if c not in table.column_names]
        if missing:
            raise ConfigError(
                f"unknown column(s) {', '.join(map(repr, missing))}; "
                f"available: {', '.join(table.column_names)}",
                key=self.key,
            )
        times = event_time_us(table, self.time, self.key)
        batch = (
            table.select(self.keys)
            .append_column("__t", times)
            .append_column("__i", pa.array(np.arange(table.num_rows)))
        )
        seen = (
            self._seen
            if self._seen is not None
            else batch.select(self.keys).slice(0, 0).append_column(LAST, pa.array([], pa.int64()))
        )
        repeat = self._repeats(batch, seen)
        self._remember(batch, seen, times)
        kept = table.filter(pc.invert(repeat))
        dropped = table.num_rows - kept.num_rows
        ctx.counters["deduplicated"] += dropped
        ctx.counters["filtered"] += dropped
        return kept

    def _repeats(self, batch: pa.Table, seen: pa.Table) -> pa.Array:
        keys = [quote(k) for k in self.keys]
        joined = " AND ".join(f"b.{k} = s.{k}" for k in keys)
        present = " AND ".join(f"b.{k} IS NOT NULL" for k in keys)
        width = self.window
        sql = (
            f"SELECT coalesce({present} AND b.__t IS NOT NULL AND ("
            f"(lag(b.__t) OVER w IS NOT NULL AND b.__t - lag(b.__t) OVER w < {width}) OR "
            f"(s.{LAST} IS NOT NULL AND abs(b.__t - s.{LAST}) < {width})), false) AS repeat "
            f"FROM batch b LEFT JOIN seen s ON {joined} "
            f"WINDOW w AS (PARTITION BY {', '.join('b.' + k for k in keys)} "
            f"ORDER BY b.__t, b.__i) ORDER BY b.__i"
        )
        return self.duck.query(sql, batch=batch, seen=seen).column("repeat").combine_chunks()

    def _remember(self, batch: pa.Table, seen: pa.Table, times: pa.Array) -> None:
        """Fold the batch's latest time per key into the state and forget old keys."""
        if times.null_count < len(times):
            latest = int(pc.max(times).as_py())
            self._max_seen = latest if self._max_seen is None else max(self._max_seen, latest)
        if self._max_seen is None:
            return
        keys = ", ".join(quote(k) for k in self.keys)
        present = " AND ".join(f"{quote(k)} IS NOT NULL" for k in self.keys)
        horizon = self._max_seen - 2 * self.window
        sql = (
            f"SELECT {keys}, max(t) AS {LAST} FROM ("
            f"SELECT {keys}, {LAST} AS t FROM seen UNION ALL "
            f"SELECT {keys}, __t AS t FROM batch WHERE __t IS NOT NULL AND {present}) "
            f"GROUP BY {keys} HAVING max(t) > {horizon} ORDER BY {keys}"
        )
        self._seen = self.duck.query(sql, batch=batch, seen=seen)

    def state(self) -> bytes | None:
        """Latest event time per recently seen key, as Arrow IPC bytes."""
        if self._seen is None:
            return None
        return to_ipc(self._seen, {"max_seen": str(self._max_seen)})

    def restore(self, blob: bytes) -> None:
        """Restore the state saved by ``state()``."""
        self._seen, meta = from_ipc(blob)
        self._max_seen = optional_int(meta.get("max_seen"))

    def describe(self) -> dict[str, Any]:
        """A short description for status pages."""
        keys = 0 if self._seen is None else self._seen.num_rows
        return {
            "type": self.name,
            "keys": self.keys,
            "window_us": self.window,
            "remembered_keys": keys,
        }
