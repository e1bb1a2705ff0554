"""Inserts that tolerate an existing row, in the metadata DB's dialect (SQLite, PostgreSQL)."""

from __future__ import annotations

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


def upsert(conn: Connection, table: Table, values: dict[str, Any], keys: list[str]) -> None:
    """Insert ``values``, or update the row with the same ``keys`` to them (atomically)."""
    stmt = _insert(conn, table).values(**values)
    changes = {k: v for k, v in values.items() if k not in keys}
    conn.execute(stmt.on_conflict_do_update(index_elements=keys, set_=changes))
