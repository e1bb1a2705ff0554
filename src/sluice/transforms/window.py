"""Event-time windows (tumbling or sliding, per key) with any DuckDB SQL aggregate.

The operator buffers the raw rows of open windows (only the columns the aggregates
need) and aggregates a window with one DuckDB ``GROUP BY`` when it closes, so every SQL
aggregate works, including non-decomposable ones such as ``quantile_cont``.

Windows are aligned to the Unix epoch; window ``w`` covers ``[w*slide, w*slide + size)``.
The watermark is the largest event time seen minus ``allowed_lateness``; a window closes
once the watermark reaches its end. A row whose earliest window has already closed is
late: it is recorded in the dead-letter store (stage ``window``, reason ``late: ...``)
and is left out of every window, so each emitted aggregate equals a plain ``GROUP BY``
over the rows that were on time.
"""

from __future__ import annotations

from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sluice.config.models import WindowSpec
from sluice.core.arrays import from_numpy, scalar, to_numpy
from sluice.core.batch import empty_table
from sluice.core.context import EpochContext
from sluice.core.errors import ConfigError
from sluice.core.types import duration_us
from sluice.transforms.base import Transform
from sluice.transforms.duck import (
    SQL_CONFIG_ERRORS,
    DuckSQL,
    check_expression,
    from_ipc,
    optional_int,
    quote,
    to_ipc,
)
from sluice.transforms.sql import first_line

TIME = "__t"  # event time in epoch microseconds, in the buffer
UTC_US = pa.timestamp("us", tz="UTC")


def event_time_us(table: pa.Table, column: str, where: str) -> pa.Array:
    """Return ``column`` as epoch microseconds (int64, nulls kept)."""
    values = table.column(column).combine_chunks()
    kind = values.type
    if pa.types.is_date(kind):
        values = values.cast(pa.timestamp("us"))
    elif not pa.types.is_timestamp(kind):
        raise ConfigError(
            f"event-time column {column!r} must be a timestamp, not {kind}", key=where
        )
    return values.cast(pa.timestamp("us", tz=values.type.tz), safe=False).cast(pa.int64())


def as_list(key: str | list[str] | None) -> list[str]:
    """A key spec (one column, several, or none) as a list of columns."""
    if key is None:
        return []
    return [key] if isinstance(key, str) else list(key)


class WindowTransform(Transform):
    """Aggregate rows per key over event-time windows; emit each window once it closes."""

    name = "window"

    def __init__(self, spec: WindowSpec, index: int, event_time: str | None) -> None:
        self.key = f"transforms[{index}].window"
        self.stage = "window"
        time = spec.time or event_time
        if not time:
            raise ConfigError(
                "a window needs an event-time column: set 'time' or the pipeline's 'event_time'",
                key=self.key,
            )
        self.time = time
        self.size = duration_us(spec.size)
        self.slide = duration_us(spec.slide) if spec.slide else self.size
        self.lateness = duration_us(spec.allowed_lateness)
        self._check_durations()
        self.keys = as_list(spec.key)
        self.aggregates = dict(spec.aggregate)
        self.into = spec.into
        self.holds_state = True
        self.replaces_stream = spec.into is None
        self.duck = DuckSQL(threads=1)
        self.needed = self._check_aggregates()
        self._buffer: pa.Table | None = None
        self._max_seen: int | None = None
        self._closed_to: int | None = None  # every window ending at or before it was emitted

    def _check_durations(self) -> None:
        if self.size <= 0 or self.slide <= 0:
            raise ConfigError("window size and slide must be positive", key=self.key)
        if self.slide > self.size:
            raise ConfigError("window slide must not exceed its size", key=self.key)
        if self.lateness < 0:
            raise ConfigError("allowed_lateness must not be negative", key=self.key)

    def _check_aggregates(self) -> set[str]:
        if not self.aggregates:
            raise ConfigError("a window needs at least one aggregate", key=self.key)
        reserved = {*self.keys, "window_start", "window_end"}
        needed: set[str] = set()
        for out, expr in self.aggregates.items():
            where = f"{self.key}.aggregate.{out}"
            if out in reserved:
                raise ConfigError(
                    f"aggregate name {out!r} clashes with an output column", key=where
                )
            check_expression(self.duck, expr, where, select=f"SELECT {expr} AS x FROM t")
            needed |= self.duck.column_refs(f"SELECT {expr} AS x FROM t")
        return needed

    # -- per batch -------------------------------------------------------------------
    def apply(self, table: pa.Table, ctx: EpochContext) -> pa.Table:
        """Buffer the batch's on-time rows and return (or emit) the windows that closed."""
        self._check_columns(table)
        times = event_time_us(table, self.time, self.key)
        late = self._late_mask(times)
        if late.any():
            late_mask, on_time_mask = from_numpy(late), from_numpy(~late)
            self._reject_late(table.filter(late_mask), times.filter(late_mask), ctx)
            on_time = table.filter(on_time_mask)
            times = times.filter(on_time_mask)
        else:
            on_time = table
        self._append(on_time, times)
        if len(times):
            batch_max = int(pc.max(times).as_py())
            self._max_seen = batch_max if self._max_seen is None else max(self._max_seen, batch_max)
        closed = self._close(ctx, upto=self._watermark())
        if self.into is None:
            return closed
        ctx.emit(self.into, closed)
        return table

    def output_schema(self, schema: pa.Schema) -> pa.Schema | None:
        """Check the key, time and aggregated columns; the aggregates' columns are not known."""
        self._check_columns(empty_table(schema))
        unknown = sorted(self.needed - set(schema.names))
        if unknown:
            raise ConfigError(
                f"unknown column(s) {', '.join(map(repr, unknown))} in the aggregates; "
                f"available: {', '.join(schema.names)}",
                key=f"{self.key}.aggregate",
            )
        return None if self.replaces_stream else schema

    def finish(self, ctx: EpochContext) -> pa.Table | None:
        """Emit every window still open (the input has ended)."""
        if self._buffer is None:
            return None
        closed = self._close(ctx, upto=self._open_until())
        if self.into is None:
            return closed
        ctx.emit(self.into, closed)
        return None

    def _check_columns(self, table: pa.Table) -> None:
        missing = [c for c in [*self.keys, self.time] if c not in table.column_names]
        if missing:
            raise ConfigError(
                f"unknown column(s) {', '.join(map(repr, missing))}; "
                f"available: {', '.join(table.column_names)}",
                key=self.key,
            )

    def _watermark(self) -> int | None:
        return None if self._max_seen is None else self._max_seen - self.lateness

    def first_end(self, times: np.ndarray) -> np.ndarray:
        """End of the earliest window that contains each time (epoch µs)."""
        return ((times - self.size) // self.slide + 1) * self.slide + self.size

    def _late_mask(self, times: pa.Array) -> np.ndarray:
        missing = to_numpy(times.is_null())
        if self._closed_to is None or len(times) == 0:
            return missing
        values = to_numpy(pc.fill_null(times, scalar(0, pa.int64())))
        return missing | (self.first_end(values) <= self._closed_to)

    def _reject_late(self, rows: pa.Table, times: pa.Array, ctx: EpochContext) -> None:
        self.reject_late(rows, times, self._closed_to or 0, ctx)

    def reject_late(
        self, rows: pa.Table, times: pa.Array, closed_to: int, ctx: EpochContext
    ) -> None:
        """Dead-letter late ``rows`` (``times``: their event times) given the closed horizon."""
        stamps = pc.cast(times.cast(UTC_US), pa.string())
        closed = pa.scalar(closed_to, pa.int64()).cast(UTC_US)
        late = pc.binary_join_element_wise(
            "late: event time ",
            stamps,
            f" falls in a window that already closed (windows up to {closed} are "
            f"emitted; allowed_lateness {self.lateness / 1e6:g}s)",
            "",
        )
        reason = pc.fill_null(late, f"missing event time {self.time!r}: the row has no window")
        ctx.counters["late"] += len(times) - times.null_count
        self._record(ctx, reason, rows, removed=self.into is None)

    def _record(
        self, ctx: EpochContext, reason: pa.Array | str, rows: pa.Table, removed: bool
    ) -> None:
        """Dead-letter ``rows``; count them as dead-lettered only if they leave the stream."""
        before = ctx.counters["dead_lettered"]
        ctx.dead_letter_rows(self.stage, reason, rows)
        if not removed:  # the rows still flow on (``into`` mode): recorded, not rejected
            ctx.counters["dead_lettered"] = before

    def _append(self, rows: pa.Table, times: pa.Array) -> None:
        columns = [*self.keys, *sorted(self.needed & set(rows.column_names) - set(self.keys))]
        part = rows.select(columns).append_column(TIME, times)
        if self._buffer is None:
            self._buffer = part
        elif part.num_rows:
            self._buffer = pa.concat_tables([self._buffer, part], promote_options="permissive")

    # -- closing windows ---------------------------------------------------------------
    def _close(self, ctx: EpochContext, upto: int | None) -> pa.Table:
        """Aggregate the windows ending in (closed_to, upto]; ``None`` closes nothing."""
        assert self._buffer is not None
        buffer, size, slide = self._buffer, self.size, self.slide
        times = to_numpy(buffer.column(TIME))
        first = (times - size) // slide + 1
        last = times // slide
        low = (
            first
            if self._closed_to is None
            else np.maximum(first, (self._closed_to - size) // slide + 1)
        )
        high = first - 1 if upto is None else np.minimum(last, (upto - size) // slide)
        take = low <= high
        part = (
            buffer.filter(from_numpy(take))
            .append_column("__a", from_numpy(low[take]))
            .append_column("__b", from_numpy(high[take]))
        )
        result = self._aggregate(part, ctx)
        if upto is not None and (self._closed_to is None or upto > self._closed_to):
            self._buffer = buffer.filter(from_numpy(last * slide + size > upto))
            self._closed_to = upto
        return result

    def _open_until(self) -> int | None:
        """End of the last window that holds buffered rows (None when nothing is buffered)."""
        if self._buffer is None or self._buffer.num_rows == 0:
            return None
        latest = int(pc.max(self._buffer.column(TIME)).as_py())
        return (latest // self.slide) * self.slide + self.size

    def aggregate_range(self, rows: pa.Table, low: int, high: int, ctx: EpochContext) -> pa.Table:
        """Aggregate the windows ``low..high`` (indices) of on-time ``rows`` in one GROUP BY.

        A batch runner's window: ``rows`` (in arrival order) hold the event-time column and
        the aggregated columns; each row counts in its windows between ``low`` and ``high``.
        """
        times = event_time_us(rows, self.time, self.key).to_numpy(zero_copy_only=False)
        first = np.maximum((times - self.size) // self.slide + 1, low)
        last = np.minimum(times // self.slide, high)
        take = first <= last
        columns = [*self.keys, *sorted(self.needed & set(rows.column_names) - set(self.keys))]
        part = (
            rows.select(columns)
            .filter(take)
            .append_column("__a", pa.array(first[take]))
            .append_column("__b", pa.array(last[take]))
        )
        return self._aggregate(part, ctx)

    def window_index(self, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The first and last window index that contain each time (epoch µs)."""
        return (times - self.size) // self.slide + 1, times // self.slide

    def _aggregate(self, part: pa.Table, ctx: EpochContext) -> pa.Table:
        keys = [quote(k) for k in self.keys]
        window = "__a" if self.slide == self.size else "unnest(range(__a, __b + 1))"
        aggregates = ", ".join(f"{expr} AS {quote(out)}" for out, expr in self.aggregates.items())
        sql = (
            f"SELECT {''.join(k + ', ' for k in keys)}__w * {self.slide} AS window_start, "
            f"__w * {self.slide} + {self.size} AS window_end, {aggregates} "
            f"FROM (SELECT *, {window} AS __w FROM part) "
            f"GROUP BY {''.join(k + ', ' for k in keys)}__w "
            f"ORDER BY __w{''.join(', ' + k for k in keys)}"
        )
        try:
            result = self.duck.query(sql, part=part)
        except SQL_CONFIG_ERRORS as exc:
            raise ConfigError(first_line(exc), key=self.key) from None
        except duckdb.Error as exc:
            self._record(
                ctx,
                f"window aggregate failed: {first_line(exc)}",
                part.drop_columns(["__a", "__b"]),
                removed=False,
            )
            result = self.duck.query(sql, part=part.slice(0, 0))
        for column in ("window_start", "window_end"):
            where = result.schema.get_field_index(column)
            result = result.set_column(where, column, result.column(column).cast(UTC_US))
        return result

    # -- checkpoint ----------------------------------------------------------------------
    def state(self) -> bytes | None:
        """The buffered rows of open windows plus the watermark, as Arrow IPC bytes."""
        if self._buffer is None:
            return None
        return to_ipc(
            self._buffer, {"max_seen": str(self._max_seen), "closed_to": str(self._closed_to)}
        )

    def restore(self, blob: bytes) -> None:
        """Restore buffered rows and watermark saved by ``state()``."""
        self._buffer, meta = from_ipc(blob)
        self._max_seen = optional_int(meta.get("max_seen"))
        self._closed_to = optional_int(meta.get("closed_to"))

    def describe(self) -> dict[str, Any]:
        """A short description for status pages."""
        return {
            "type": self.name,
            "size_us": self.size,
            "slide_us": self.slide,
            "keys": self.keys,
            "into": self.into,
            "buffered_rows": 0 if self._buffer is None else self._buffer.num_rows,
        }
