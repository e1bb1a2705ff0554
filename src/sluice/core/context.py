"""Per-epoch context that stages use to report dead letters, side outputs and counters."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from sluice.core.duck import memory_cursor

DEAD_LETTER_SCHEMA = pa.schema(
    [
        pa.field("pipeline", pa.string()),
        pa.field("epoch", pa.int64()),
        pa.field("stage", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("raw", pa.string()),
        pa.field("origin", pa.string()),
        pa.field("rejected_at", pa.timestamp("us", tz="UTC")),
    ]
)


def rows_as_json(table: pa.Table) -> pa.Array:
    """Serialise each row of ``table`` to a JSON object string (vectorised by DuckDB)."""
    if table.num_rows == 0:
        return pa.array([], pa.string())
    if table.num_columns == 0:
        return pa.array(["{}"] * table.num_rows, pa.string())
    con = memory_cursor()
    try:
        con.register("rows_in", table)
        cols = ", ".join('"' + c.replace('"', '""') + '"' for c in table.column_names)
        sql = f"SELECT to_json(struct_pack({cols}))::VARCHAR AS j FROM rows_in"
        return con.sql(sql).to_arrow_table().column("j").combine_chunks()
    finally:
        con.close()


@dataclass
class EpochContext:
    """What one micro-batch's stages share: where rejects and side outputs go."""

    pipeline: str
    epoch: int
    dead_letters: list[pa.Table] = field(default_factory=list)
    side_outputs: dict[str, list[pa.Table]] = field(default_factory=dict)
    counters: Counter[str] = field(default_factory=Counter)
    final: bool = False  # the source is exhausted: flush open windows
    # integer origins (a partition's offsets) are named ``origin_prefix + offset``
    origin_prefix: str = ""

    def dead_letter(
        self, stage: str, reason: pa.Array | str, raw: pa.Array, origin: pa.Array | None = None
    ) -> None:
        """Record rejected rows with their raw payload, stage and reason."""
        n = len(raw)
        if n == 0:
            return
        if isinstance(reason, str):
            reason = pa.repeat(pa.scalar(reason, pa.string()), n)
        now = pa.scalar(int(time.time() * 1_000_000), pa.timestamp("us", tz="UTC"))
        self.dead_letters.append(
            pa.table(
                {  # constant columns are built in Arrow, without a Python list per row
                    "pipeline": pa.repeat(pa.scalar(self.pipeline, pa.string()), n),
                    "epoch": pa.repeat(pa.scalar(self.epoch, pa.int64()), n),
                    "stage": pa.repeat(pa.scalar(stage, pa.string()), n),
                    "reason": reason.cast(pa.string()),
                    "raw": raw.cast(pa.string()),
                    "origin": self._origin_text(origin, n),
                    "rejected_at": pa.repeat(now, n),
                },
                schema=DEAD_LETTER_SCHEMA,
            )
        )
        self.counters["dead_lettered"] += n

    def _origin_text(self, origin: pa.Array | None, n: int) -> pa.Array:
        """Origins as strings; integer ones (offsets) get ``origin_prefix`` in front."""
        if origin is None:
            return pa.nulls(n, pa.string())
        text = origin.cast(pa.string())
        if pa.types.is_integer(origin.type):
            return pc.binary_join_element_wise(self.origin_prefix, text, "")
        return text

    def dead_letter_rows(
        self, stage: str, reason: pa.Array | str, rows: pa.Table, origin: pa.Array | None = None
    ) -> None:
        """Record decoded rows as dead letters; their raw payload is the row as JSON."""
        if rows.num_rows:
            if origin is None and "__origin" in rows.column_names:
                origin = rows.column("__origin").combine_chunks()
            keep = [c for c in rows.column_names if not c.startswith("__")]
            self.dead_letter(stage, reason, rows_as_json(rows.select(keep)), origin)

    def emit(self, table_name: str, rows: pa.Table) -> None:
        """Send rows to a side-output lake table (e.g. window aggregates ``into``)."""
        if rows.num_rows:
            self.side_outputs.setdefault(table_name, []).append(rows)

    @property
    def dead_letter_count(self) -> int:
        """Rows rejected so far in this epoch."""
        return sum(t.num_rows for t in self.dead_letters)
