"""Helpers for Arrow tables moving through the pipeline."""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa


def empty_table(schema: pa.Schema) -> pa.Table:
    """Return a table with ``schema`` and no rows (``schema.empty_table()``, which imports
    pandas: see ``sluice.core.arrays``)."""
    columns = [pa.nulls(0, field.type) for field in schema]
    return pa.Table.from_batches([pa.RecordBatch.from_arrays(columns, schema=schema)])


def concat(tables: Iterable[pa.Table], schema: pa.Schema | None = None) -> pa.Table:
    """Concatenate tables, unifying schemas (missing columns become null)."""
    items = [t for t in tables if t is not None]
    if not items:
        return empty_table(schema or pa.schema([]))
    if len(items) == 1:
        return items[0]
    return pa.concat_tables(items, promote_options="permissive")


def with_column(table: pa.Table, name: str, values: pa.Array | pa.ChunkedArray) -> pa.Table:
    """Set column ``name`` (replace it if present, append otherwise)."""
    index = table.schema.get_field_index(name)
    if index >= 0:
        return table.set_column(index, name, values)
    return table.append_column(name, values)


def drop_internal(table: pa.Table) -> pa.Table:
    """Drop columns whose names start with ``__`` (runner bookkeeping)."""
    keep = [n for n in table.column_names if not n.startswith("__")]
    return table.select(keep) if len(keep) != table.num_columns else table
