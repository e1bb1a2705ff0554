"""Cut one HTTP response page into raw JSON records with DuckDB (no per-record Python loop).

A ``json`` page is a JSON array, or an object holding the array at ``records`` (a dotted
path); an ``ndjson`` page is one JSON value per line. Each record comes out as JSON text
(``_raw``) with its incremental cursor value (``__cursor``, text) when a cursor field is
named. NDJSON lines that are not JSON stay in as records: the decode stage dead-letters them.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import pyarrow as pa

from sluice.core.errors import SourceError

NUMERIC = ("BIGINT", "UBIGINT", "DOUBLE", "HUGEINT", "INTEGER")


def json_path(dotted: str | None) -> str:
    """``a.b`` as the JSONPath ``$."a"."b"`` (``$`` for None)."""
    if not dotted:
        return "$"
    return "$" + "".join(f'."{part}"' for part in dotted.split("."))


@dataclass
class Page:
    """The records of one page: ``_raw`` and ``__cursor`` columns, and the body's next value."""

    rows: pa.Table
    next_value: str | None = None  # the body's next link or next cursor token, if asked for
    numeric_cursor: bool = False


class PageReader:
    """Parses pages with one in-memory DuckDB connection (opened on first use)."""

    def __init__(self, fmt: str, records: str | None, cursor: str | None, nxt: str | None) -> None:
        self.fmt, self.records, self.cursor, self.next = fmt, records, cursor, nxt
        self._con: duckdb.DuckDBPyConnection | None = None

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """The DuckDB connection."""
        if self._con is None:
            self._con = duckdb.connect()
        return self._con

    def read(self, body: str, where: str) -> Page:
        """The records of ``body``; a SourceError naming ``where`` when it is not JSON."""
        if self.fmt == "ndjson":
            source = (
                "SELECT line AS e, json_valid(line) AS ok, n FROM (SELECT "
                "trim(unnest(string_split($body, chr(10))), chr(13) || ' ') AS line, "
                "generate_subscripts(string_split($body, chr(10)), 1) AS n) WHERE line <> ''"
            )
        else:
            source = (
                "SELECT CAST(e AS VARCHAR) AS e, true AS ok, n FROM (SELECT "
                "unnest(CAST(json_extract(CAST($body AS JSON), $records) AS JSON[])) AS e, "
                "generate_subscripts(CAST(json_extract(CAST($body AS JSON), $records) AS JSON[]), "
                "1) AS n)"
            )
        cursor = "NULL::VARCHAR AS c, NULL::VARCHAR AS t"
        if self.cursor is not None:
            cursor = (
                "CASE WHEN ok THEN json_extract_string(e, $cursor) END AS c, "
                "CASE WHEN ok THEN json_type(e, $cursor) END AS t"
            )
        params = {"body": body, "records": json_path(self.records)}
        if self.cursor is not None:
            params["cursor"] = json_path(self.cursor)
        try:
            if self.fmt == "json":
                self._check_array(body, where)
            rows = self.con.sql(
                f"SELECT e AS _raw, {cursor}, ok FROM ({source}) ORDER BY n",
                params={k: v for k, v in params.items() if f"${k}" in source + cursor},
            ).to_arrow_table()
        except duckdb.Error as exc:
            raise SourceError(f"{where}: the page is not JSON ({_first_line(exc)})") from None
        return self._page(rows, body, where)

    def _check_array(self, body: str, where: str) -> None:
        kind = self.con.execute(
            "SELECT json_type(CAST($body AS JSON), $records)",
            {"body": body, "records": json_path(self.records)},
        ).fetchall()
        if kind[0][0] != "ARRAY":
            at = f"at {self.records!r}" if self.records else "(set 'records:' to its path)"
            raise SourceError(f"{where}: the page holds no JSON array {at}")

    def _page(self, rows: pa.Table, body: str, where: str) -> Page:
        numeric = False
        if self.cursor is not None:
            types = set(rows.column("t").drop_null().unique().to_pylist())
            if "NULL" in types or rows.filter(rows.column("ok")).column("c").null_count:
                raise SourceError(
                    f"{where}: cursor field {self.cursor!r} is missing or null in a record; "
                    "every record needs a cursor value"
                )
            numeric = bool(types) and types <= set(NUMERIC)
        nxt = None
        if self.next is not None and self.fmt == "json":
            found = self.con.execute(
                "SELECT json_extract_string(CAST($body AS JSON), $path)",
                {"body": body, "path": json_path(self.next)},
            ).fetchall()
            nxt = found[0][0]
        table = pa.table({"_raw": rows.column("_raw"), "__cursor": rows.column("c")})
        return Page(table, nxt or None, numeric)

    def close(self) -> None:
        """Close the DuckDB connection."""
        con, self._con = self._con, None
        if con is not None:
            con.close()


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0][:200]
