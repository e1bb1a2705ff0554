"""Inserts that tolerate an existing row, in the metadata DB's dialect (SQLite, PostgreSQL)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite


def _insert(conn: Connection, table: Table) -> Any:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


def insert_ignore(
    conn: Connection, table: Table, rows: list[dict[str, Any]], conflict: list[str]
) -> None:
    """Insert ``rows``, skipping those whose ``conflict`` columns match an existing row."""
    if rows:
        conn.execute(_insert(conn, table).on_conflict_do_nothing(index_elements=conflict), rows)


def insert_ignore_rows(
    conn: Connection,
    table: Table,
    columns: Sequence[str],
    rows: list[tuple[Any, ...]],
    conflict: list[str],
) -> None:
    """:func:`insert_ignore` of value tuples in ``columns`` order; SQLite skips per-row dicts."""
    if not rows:
        return
    if conn.dialect.name != "sqlite":
        insert_ignore(conn, table, [dict(zip(columns, r, strict=True)) for r in rows], conflict)
        return
    processors = [table.c[c].type.bind_processor(conn.dialect) for c in columns]
    converting = [(i, p) for i, p in enumerate(processors) if p is not None]
    if converting:
        rows = [_converted(r, converting) for r in rows]
    names = ", ".join(f'"{c}"' for c in columns)
    marks = ", ".join("?" * len(columns))
    target = ", ".join(f'"{c}"' for c in conflict)
    conn.exec_driver_sql(
        f'INSERT INTO "{table.name}" ({names}) VALUES ({marks}) ON CONFLICT ({target}) DO NOTHING',
        rows,
    )


def _converted(row: tuple[Any, ...], converting: list[tuple[int, Any]]) -> tuple[Any, ...]:
    values = list(row)
    for i, process in converting:
        if values[i] is not None:
            values[i] = process(values[i])
    return tuple(values)


def upsert(conn: Connection, table: Table, values: dict[str, Any], keys: list[str]) -> None:
    """Insert ``values``, or update the row with the same ``keys`` to them (atomically)."""
    stmt = _insert(conn, table).values(**values)
    changes = {k: v for k, v in values.items() if k not in keys}
    conn.execute(stmt.on_conflict_do_update(index_elements=keys, set_=changes))
