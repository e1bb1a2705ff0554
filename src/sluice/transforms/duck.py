"""A small shared helper: SQL over Arrow tables through one reusable DuckDB connection."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import duckdb
import pyarrow as pa

from sluice.core.batch import empty_table
from sluice.core.duck import memory_cursor
from sluice.core.errors import ConfigError

# DuckDB errors that mean "this SQL cannot be bound/parsed" rather than "this data is bad".
SQL_CONFIG_ERRORS: tuple[type[Exception], ...] = (
    duckdb.ParserException,
    duckdb.BinderException,
    duckdb.CatalogException,
    duckdb.NotImplementedException,
)
RELATIONS_KEPT = 32  # bound relations a connection keeps for reuse (oldest dropped first)


def quote(name: str) -> str:
    """Quote an identifier for DuckDB SQL."""
    return '"' + name.replace('"', '""') + '"'


class DuckSQL:
    """One in-memory DuckDB connection (UTC session) that runs SQL over Arrow tables.

    Without ``threads`` it is a cursor of the process's shared instance (``memory_cursor``);
    ``threads`` is an instance setting, so a step that sets it has an instance of its own.
    """

    def __init__(self, *, threads: int | None = None) -> None:
        self.threads = threads
        if threads is None:
            self.con = memory_cursor()
        else:  # one thread makes float aggregates bit-for-bit repeatable
            self.con = duckdb.connect()
            self.con.execute("SET TimeZone = 'UTC'")
            self.con.execute(f"SET threads = {int(threads)}")
        self._relations: dict[tuple[Any, ...], duckdb.DuckDBPyRelation] = {}

    def __getstate__(self) -> dict[str, Any]:
        """Pickled as its settings (a step shipped to a Spark or Beam worker reconnects)."""
        return {"threads": self.threads}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Open a fresh connection with the pickled settings."""
        self.__init__(threads=state["threads"])  # type: ignore[misc]

    def query(self, sql: str, **tables: pa.Table) -> pa.Table:
        """Run ``sql`` with each keyword table registered under its name; return Arrow.

        The relation is parsed and bound once per SQL text and table schemas; run again it
        reads the tables registered under those names then (no parsing per epoch).
        """
        for name, table in tables.items():
            self.con.register(name, table)
        try:
            key = (
                sql,
                *(
                    (n, tuple(zip(t.schema.names, t.schema.types, strict=True)))
                    for n, t in tables.items()
                ),
            )
            relation = self._relations.get(key)
            if relation is None:
                relation = self.con.sql(sql)
                if len(self._relations) >= RELATIONS_KEPT:
                    del self._relations[next(iter(self._relations))]
                self._relations[key] = relation
            return relation.to_arrow_table()
        finally:
            for name in tables:
                self.con.unregister(name)

    def parse_error(self, sql: str) -> str | None:
        """Return DuckDB's parser message for ``sql``, or None when it parses."""
        tree = self._parse(sql)
        return str(tree.get("error_message", "syntax error")) if tree.get("error") else None

    def column_refs(self, sql: str) -> set[str]:
        """Every identifier that ``sql`` references as a column (parsed, not bound)."""
        tree = self._parse(sql)
        return {
            name
            for node in _walk(tree)
            if node.get("class") == "COLUMN_REF"
            for name in node.get("column_names", [])
        }

    def _parse(self, sql: str) -> dict[str, Any]:
        rows = self.con.execute("SELECT json_serialize_sql(?)", [sql]).fetchall()
        return dict(json.loads(rows[0][0]))

    def close(self) -> None:
        """Close the connection."""
        self.con.close()


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def check_expression(duck: DuckSQL, sql: str, where: str, *, select: str | None = None) -> None:
    """Raise a ConfigError naming ``where`` when the expression ``sql`` does not parse."""
    error = duck.parse_error(select or f"SELECT ({sql}) FROM t")
    if error:
        raise ConfigError(f"invalid SQL {sql!r}: {error}", key=where)


def empty_like(table: pa.Table) -> pa.Table:
    """A zero-row table with the schema of ``table`` (for binding checks)."""
    return empty_table(table.schema)


def to_ipc(table: pa.Table, meta: dict[str, str]) -> bytes:
    """Serialise ``table`` plus string metadata as Arrow IPC stream bytes (operator state)."""
    table = table.replace_schema_metadata({k.encode(): v.encode() for k, v in meta.items()})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def from_ipc(blob: bytes) -> tuple[pa.Table, dict[str, str]]:
    """Read bytes written by ``to_ipc``: the table and its metadata."""
    table = pa.ipc.open_stream(pa.py_buffer(blob)).read_all()
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    return table.replace_schema_metadata(None), meta


def optional_int(text: str | None) -> int | None:
    """Parse an int saved as text by ``to_ipc`` metadata (``None`` stays None)."""
    return None if text in (None, "None") else int(text)
