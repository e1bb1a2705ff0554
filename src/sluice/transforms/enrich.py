"""Lookup join against a CSV/Parquet file or a warehouse table, refreshed when it changes.

Each input row gets the lookup row with the same key (the first one when the lookup
holds duplicates); input row order is kept. ``how: inner`` drops rows without a match
and counts them as ``filtered``. The lookup is re-read when the file's mtime or size
changes (checked at most once per batch). A warehouse table is read through a short
read-only DuckDB connection; while the warehouse file is locked by a writer, the
previous lookup is kept and the read is retried on the next batch.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sluice.config.models import EnrichSpec
from sluice.core.context import EpochContext
from sluice.core.errors import ConfigError, TransientError
from sluice.core.settings import Settings
from sluice.transforms.base import Transform
from sluice.transforms.duck import quote
from sluice.transforms.window import as_list

log = logging.getLogger("sluice.transforms.enrich")

FIRST_READ_ATTEMPTS = 6  # ~1.5 s in all before a locked warehouse fails the first batch
ROW = "__enrich_row"
MATCH = "__enrich_match"


class LookupUnavailableError(TransientError):
    """The lookup table cannot be read yet (the warehouse is locked); retry later."""


def _signature(paths: list[Path]) -> tuple[tuple[float, int], ...]:
    out = []
    for path in paths:
        try:
            stat = path.stat()
            out.append((stat.st_mtime, stat.st_size))
        except FileNotFoundError:
            out.append((0.0, -1))
    return tuple(out)


def read_lookup_file(path: Path) -> pa.Table:
    """Read a CSV or Parquet lookup file into Arrow."""
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        return pq.read_table(path)
    if suffix in (".csv", ".tsv", ".txt"):
        import pyarrow.csv as pacsv

        delimiter = "\t" if suffix == ".tsv" else ","
        return pacsv.read_csv(path, parse_options=pacsv.ParseOptions(delimiter=delimiter))
    raise ConfigError(f"cannot read lookup file {str(path)!r}: use .csv or .parquet")


class EnrichTransform(Transform):
    """Add columns from a lookup file or warehouse table, matched on key column(s)."""

    name = "enrich"

    def __init__(self, spec: EnrichSpec, index: int, settings: Settings) -> None:
        self.key = f"transforms[{index}].enrich"
        self.on = as_list(spec.on)
        if not self.on:
            raise ConfigError("enrich needs at least one 'on' column", key=self.key)
        self.spec = spec
        self.inner = spec.how == "inner"
        if spec.path is not None:
            self.origin = str(spec.path)
            self._watched = [Path(spec.path)]
        else:
            url = str(settings.warehouse_url)
            if "://" in url:
                raise ConfigError(
                    f"enrich from a warehouse table needs a DuckDB warehouse; "
                    f"{url.split('://')[0]}:// is not supported yet",
                    key=self.key,
                )
            self.origin = f"warehouse table {spec.table!r}"
            self._watched = [Path(url), Path(url + ".wal")]
        self._signature: tuple[tuple[float, int], ...] | None = None
        self._lookup: pa.Table | None = None  # key columns + the added columns, keys unique

    # -- the lookup ----------------------------------------------------------------------
    def freeze(self) -> None:
        """Read the lookup now and never again: a batch run joins against one snapshot."""
        self._refresh()
        self._watched = []
        self._signature = ()

    def _refresh(self) -> None:
        """Re-read the lookup if its file changed since the last read."""
        signature = _signature(self._watched)
        if signature == self._signature and self._lookup is not None:
            return
        try:
            raw = self._read_with_retry()
        except (LookupUnavailableError, pa.ArrowInvalid, OSError) as exc:
            if self._lookup is None:
                if isinstance(exc, LookupUnavailableError):
                    raise
                raise ConfigError(f"cannot read {self.origin}: {exc}", key=self.key) from None
            log.warning("cannot re-read %s (%s); keeping the previous lookup", self.origin, exc)
            return
        self._lookup = self._prepare(raw)
        self._signature = signature

    def _read_with_retry(self) -> pa.Table:
        """Read the lookup; the first read waits a little for a locked warehouse."""
        attempts = 1 if self._lookup is not None else FIRST_READ_ATTEMPTS
        for attempt in range(attempts):
            try:
                return self._read()
            except LookupUnavailableError:
                if attempt == attempts - 1:
                    raise
                time.sleep(0.1 * (attempt + 1))
        raise AssertionError("unreachable")

    def _read(self) -> pa.Table:
        if self.spec.path is not None:
            path = Path(self.spec.path)
            if not path.exists():
                if self._lookup is not None:
                    raise LookupUnavailableError(f"lookup file {str(path)!r} disappeared")
                raise ConfigError(f"lookup file {str(path)!r} does not exist", key=self.key)
            return read_lookup_file(path)
        return self._read_table()

    def _read_table(self) -> pa.Table:
        path = self._watched[0]
        if not path.exists():
            raise ConfigError(f"warehouse {str(path)!r} does not exist", key=self.key)
        try:
            con = duckdb.connect(str(path), read_only=True)
        except (duckdb.IOException, duckdb.ConnectionException) as exc:
            raise LookupUnavailableError(f"cannot open {self.origin}: {exc}") from None
        try:
            return con.sql(f"SELECT * FROM {quote(str(self.spec.table))}").to_arrow_table()
        except duckdb.CatalogException:
            raise ConfigError(
                f"{self.origin} does not exist in {str(path)!r}", key=self.key
            ) from None
        finally:
            con.close()

    def _prepare(self, raw: pa.Table) -> pa.Table:
        """Keep the key and wanted columns, first row per key, prefixed names."""
        missing = [c for c in self.on + (self.spec.columns or []) if c not in raw.column_names]
        if missing:
            raise ConfigError(
                f"{self.origin} has no column(s) {', '.join(map(repr, missing))}", key=self.key
            )
        wanted = self.spec.columns or [c for c in raw.column_names if c not in self.on]
        table = raw.select(self.on + [c for c in wanted if c not in self.on])
        table = table.append_column(ROW, pa.array(np.arange(table.num_rows)))
        first = table.group_by(self.on, use_threads=False).aggregate([(ROW, "min")])
        table = table.take(np.sort(first.column(f"{ROW}_min").to_numpy()))
        if first.num_rows != raw.num_rows:
            log.warning("%s has repeated keys; the first row per key is used", self.origin)
        names = self.on + [self.spec.prefix + c for c in table.column_names[len(self.on) : -1]]
        return table.drop_columns([ROW]).rename_columns(names)

    # -- per batch -------------------------------------------------------------------
    def apply(self, table: pa.Table, ctx: EpochContext) -> pa.Table:
        """Add the lookup columns to each row (dropping unmatched rows for ``inner``)."""
        self._refresh()
        assert self._lookup is not None
        lookup = self._lookup
        missing = [c for c in self.on if c not in table.column_names]
        if missing:
            raise ConfigError(
                f"unknown column(s) {', '.join(map(repr, missing))}; "
                f"available: {', '.join(table.column_names)}",
                key=self.key,
            )
        added = lookup.column_names[len(self.on) :]
        clashes = [c for c in added if c in table.column_names]
        if clashes:
            raise ConfigError(
                f"lookup column(s) {', '.join(map(repr, clashes))} already exist "
                f"in the stream; set 'prefix' or 'columns'",
                key=self.key,
            )
        index = self._match(table, lookup)
        out = table
        for column in added:
            out = out.append_column(column, lookup.column(column).take(index))
        if self.inner:
            kept = out.filter(pc.is_valid(index))
            ctx.counters["filtered"] += out.num_rows - kept.num_rows
            return kept
        return out

    def _match(self, table: pa.Table, lookup: pa.Table) -> pa.Array:
        """For each input row, the index of its lookup row (null when there is none)."""
        keys = []
        for column in self.on:
            wanted = table.schema.field(column).type
            values = lookup.column(column)
            if values.type != wanted:
                try:
                    values = values.cast(wanted)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise ConfigError(
                        f"key {column!r} of {self.origin} ({values.type}) cannot "
                        f"be matched with the stream's {wanted}: {exc}",
                        key=self.key,
                    ) from None
            keys.append(values)
        if len(self.on) == 1:
            return pc.index_in(
                table.column(self.on[0]), value_set=keys[0].combine_chunks(), skip_nulls=True
            )
        left = table.select(self.on).append_column(ROW, pa.array(np.arange(table.num_rows)))
        right = pa.table(dict(zip(self.on, keys, strict=True))).append_column(
            MATCH, pa.array(np.arange(lookup.num_rows))
        )
        joined = left.join(right, self.on, join_type="left outer", use_threads=False)
        joined = joined.sort_by(ROW)
        return joined.column(MATCH).combine_chunks()

    def describe(self) -> dict[str, Any]:
        """A short description for status pages."""
        rows = 0 if self._lookup is None else self._lookup.num_rows
        return {"type": self.name, "lookup": self.origin, "rows": rows, "how": self.spec.how}
