"""Inserts and batch writes in the metadata DB's dialect (SQLite, PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, Table, bindparam


def _insert(conn: Connection, table: Table) -> Any:
    # the dialect in use is imported already; importing the other one costs start-up time
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table)
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(table)


def insert_ignore(
    conn: Connection, table: Table, rows: list[dict[str, Any]], conflict: list[str]
) -> None:
    """Insert ``rows``, skipping those whose ``conflict`` columns match an existing row."""
    if rows:
        conn.execute(_insert(conn, table).on_conflict_do_nothing(index_elements=conflict), rows)


def insert_rows(
    conn: Connection,
    table: Table,
    columns: Sequence[str],
    rows: list[tuple[Any, ...]],
    conflict: list[str] | None = None,
) -> None:
    """Insert value tuples in ``columns`` order (skipping ``conflict`` matches) in one call.

    On SQLite the tuples go straight to the driver's executemany (no per-row dicts).
    """
    if not rows:
        return
    if conn.dialect.name != "sqlite":
        dicts = [dict(zip(columns, r, strict=True)) for r in rows]
        if conflict:
            insert_ignore(conn, table, dicts, conflict)
        else:
            conn.execute(table.insert(), dicts)
        return
    names = ", ".join(f'"{c}"' for c in columns)
    sql = f'INSERT INTO "{table.name}" ({names}) VALUES ({", ".join("?" * len(columns))})'
    if conflict:
        sql += " ON CONFLICT ({}) DO NOTHING".format(", ".join(f'"{c}"' for c in conflict))
    conn.exec_driver_sql(sql, _bound(conn, table, columns, rows))


def update_rows(
    conn: Connection, table: Table, key: str, columns: Sequence[str], rows: list[tuple[Any, ...]]
) -> None:
    """Set ``columns`` of the row whose ``key`` is each tuple's last value, in one call."""
    if not rows:
        return
    if conn.dialect.name != "sqlite":
        params = [{f"_{c}": v for c, v in zip((*columns, key), r, strict=True)} for r in rows]
        stmt = (
            table.update()
            .where(table.c[key] == bindparam(f"_{key}"))
            .values({c: bindparam(f"_{c}") for c in columns})
        )
        conn.execute(stmt, params)
        return
    sets = ", ".join(f'"{c}" = ?' for c in columns)
    conn.exec_driver_sql(
        f'UPDATE "{table.name}" SET {sets} WHERE "{key}" = ?',
        _bound(conn, table, (*columns, key), rows),
    )


def _bound(
    conn: Connection, table: Table, columns: Sequence[str], rows: list[tuple[Any, ...]]
) -> list[tuple[Any, ...]]:
    """``rows`` with each value converted by its column type for the driver (as SQLAlchemy)."""
    processors = [
        (i, _cached(process))
        for i, c in enumerate(columns)
        if (process := table.c[c].type.bind_processor(conn.dialect)) is not None
    ]
    if not processors:
        return rows
    out = []
    for row in rows:
        values = list(row)
        for i, convert in processors:
            values[i] = convert(values[i])
        out.append(tuple(values))
    return out


def _cached(process: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``process`` remembering its last input (one timestamp repeats over a whole batch)."""
    last: list[Any] = [_UNSET, None]

    def convert(value: Any) -> Any:
        if value is None:
            return None
        if value is not last[0]:
            last[0], last[1] = value, process(value)
        return last[1]

    return convert


_UNSET = object()


def upsert(conn: Connection, table: Table, values: dict[str, Any], keys: list[str]) -> None:
    """Insert ``values``, or update the row with the same ``keys`` to them (atomically)."""
    stmt = _insert(conn, table).values(**values)
    changes = {k: v for k, v in values.items() if k not in keys}
    conn.execute(stmt.on_conflict_do_update(index_elements=keys, set_=changes))
