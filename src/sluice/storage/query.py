"""Read-only SQL over the warehouse and the lake tables, by name, through DuckDB.

Each query runs in a fresh in-memory DuckDB session that is set up, then sealed:

* the DuckDB warehouse is never attached: its tables are exposed as views (``<name>`` and
  ``warehouse.<name>``) over Arrow streams read from a cursor of the process's shared
  instance of the file (``connectors.duckdb_shared``). Each scan reads a snapshot (DuckDB's MVCC)
  and holds no lock a warehouse sink of this process needs, so slow queries never stall
  pipelines. Scans read whole tables (no filter pushdown into the warehouse);
* every Delta table under the lake root is registered as a pyarrow dataset (DuckDB's own
  delta extension cannot be installed offline) and exposed as the view ``lake.<name>``;
* unqualified names: a warehouse table wins over a lake table of the same name; the lake
  one stays reachable as ``lake.<name>`` (and the warehouse one as ``warehouse.<name>``);
* the session gets its own ``memory_limit`` and ``max_temp_directory_size``
  (``Settings.query_memory_limit`` / ``query_temp_limit``), spilling under
  ``SLUICE_HOME/tmp/query``;
* then ``enable_external_access=false`` and ``lock_configuration=true``: no file can be
  read or written, nothing attached, no extension loaded, and that cannot be undone.

Only one ``SELECT``/``WITH``/``FROM``/``VALUES``/``DESCRIBE``/``SHOW``/``SUMMARIZE``/
``EXPLAIN`` statement is accepted (checked with DuckDB's own parser). ``max_bytes`` bounds
the result: a larger one raises :class:`ResultTooLargeError` without being materialised.

PostgreSQL/Redshift warehouse: DuckDB's postgres extension is not available offline, so
each warehouse table a query names is exposed under its name as an Arrow stream fed by a
server-side cursor (``fetchmany`` of 65,536 rows per batch; types from the table's column
types, unknown ones as text). DuckDB pulls batches as it needs them: a query with a limit
stops reading once it has its rows, and an aggregate streams the table through without
holding it. Filters are not pushed down into the warehouse.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa

from sluice.connectors.duckdb_shared import Lease, lease
from sluice.connectors.warehouse import (
    LOCK_WAIT_SECONDS,
    MARKER_TABLE,
    duckdb_path,
    is_lock_error,
    is_postgres_url,
    quote,
)
from sluice.core.errors import QueryError
from sluice.core.settings import Settings
from sluice.storage.lake_tables import lake_row_count, lake_table_names, open_delta

if TYPE_CHECKING:
    import pyarrow.dataset as pads
    from deltalake import DeltaTable

WAREHOUSE = "warehouse"
LAKE_SCHEMA = "lake"
_READ_ONLY_TYPES = frozenset({duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN})
_STREAM_ROWS = 65_536
_SIZE = re.compile(r"^\s*\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*$", re.IGNORECASE)
_EXPLAIN = re.compile(r"^\s*explain\s+(?:analy[sz]e\s+)?(?P<rest>.*)$", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class TableInfo:
    """One queryable table: its name, where it lives, its size and columns."""

    name: str
    kind: str  # "lake" or "warehouse"
    rows: int | None
    columns: list[str]
    types: list[str] = field(default_factory=list)


def check_read_only(sql: str) -> None:
    """Raise QueryError unless ``sql`` is exactly one read-only statement."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(f"invalid SQL: {_first_line(exc)}") from None
    if len(statements) != 1:
        raise QueryError(f"exactly one statement is allowed, got {len(statements)}")
    kind = statements[0].type
    if kind not in _READ_ONLY_TYPES:
        raise QueryError(
            f"queries are read-only: {kind.name} statements are not allowed "
            "(use SELECT, WITH, DESCRIBE, SHOW, SUMMARIZE or EXPLAIN)"
        )
    if kind == duckdb.StatementType.EXPLAIN:
        match = _EXPLAIN.match(sql)
        if match is None:
            raise QueryError("could not read the EXPLAIN statement")
        check_read_only(match.group("rest"))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class ResultTooLargeError(QueryError):
    """A query's result is larger than the ``max_bytes`` asked for."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(
            f"the result is larger than the limit of {limit} bytes; "
            "select fewer columns or rows, or aggregate"
        )


class _WarehouseTable:
    """A warehouse table as a re-readable Arrow stream: each scan reads a fresh snapshot."""

    def __init__(self, held: Lease, name: str) -> None:
        self.held, self.name = held, name

    def __arrow_c_stream__(self, requested_schema: object = None) -> object:
        """A stream of the table's rows from a new cursor of the shared instance."""
        relation = self.held.cursor().sql(f"SELECT * FROM main.{quote(self.name)}")
        reader: Any = relation.to_arrow_reader(_STREAM_ROWS)
        return reader.__arrow_c_stream__(requested_schema)


class QueryEngine:
    """Runs read-only SQL over the lake and the warehouse; safe to share between threads."""

    def __init__(
        self, settings: Settings, timeout: float | None = 30.0, lock_wait: float = LOCK_WAIT_SECONDS
    ) -> None:
        self.settings = settings
        self.timeout = timeout
        self.lock_wait = lock_wait
        self.memory_limit = _size_setting(settings.query_memory_limit)
        self.temp_limit = _size_setting(settings.query_temp_limit)
        self._deltas: dict[str, DeltaTable] = {}
        self._datasets: dict[str, tuple[int, pads.Dataset]] = {}
        self._cache_lock = threading.Lock()
        self._running: set[duckdb.DuckDBPyConnection] = set()

    def query(self, sql: str, limit: int | None = None, max_bytes: int | None = None) -> pa.Table:
        """Run one read-only statement; return at most ``limit`` rows as a pyarrow Table.

        With ``max_bytes``, a result whose Arrow buffers pass it raises ResultTooLargeError.
        """
        check_read_only(sql)
        if limit is not None and limit < 0:
            raise QueryError(f"limit must be >= 0, got {limit}")
        held: list[Lease] = []
        try:
            con = self._session(sql, held)
            with self._cache_lock:
                self._running.add(con)
            try:
                return self._run(con, sql, limit, max_bytes)
            finally:
                with self._cache_lock:
                    self._running.discard(con)
                con.close()
        finally:
            for lease_ in held:
                lease_.release()

    def interrupt(self) -> None:
        """Stop the queries this engine is running (they raise QueryError)."""
        with self._cache_lock:
            for con in self._running:
                con.interrupt()

    def tables(self) -> list[TableInfo]:
        """Every table a query can name unqualified (shadowed lake tables are left out)."""
        infos = self._warehouse_infos()
        taken = {info.name.lower() for info in infos}
        for name in lake_table_names(self.settings):
            if name.lower() in taken:
                continue
            delta = self._delta(name)
            if delta is not None:
                schema = pa.schema(delta.schema().to_arrow())
                infos.append(
                    TableInfo(
                        name,
                        "lake",
                        lake_row_count(delta),
                        schema.names,
                        [str(t) for t in schema.types],
                    )
                )
        return sorted(infos, key=lambda info: info.name)

    def _run(
        self, con: duckdb.DuckDBPyConnection, sql: str, limit: int | None, max_bytes: int | None
    ) -> pa.Table:
        timer = threading.Timer(self.timeout, con.interrupt) if self.timeout else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        try:
            relation = con.sql(sql)
            if relation is None:
                return pa.table({})
            if limit is None and max_bytes is None:
                return relation.to_arrow_table()
            return _first_rows(relation, limit, max_bytes)
        except duckdb.InterruptException:
            if timer is not None and not timer.is_alive():
                raise QueryError(
                    f"the query took longer than {self.timeout:g}s and was "
                    "stopped; narrow it down or add a LIMIT"
                ) from None
            raise QueryError("the query was interrupted") from None
        except duckdb.Error as exc:
            raise QueryError(_first_line(exc)) from None
        finally:
            if timer is not None:
                timer.cancel()

    def _session(self, sql: str, held: list[Lease]) -> duckdb.DuckDBPyConnection:
        con = duckdb.connect(
            config={"autoinstall_known_extensions": "false", "autoload_known_extensions": "false"}
        )
        try:
            warehouse = self._attach_warehouse(con, sql, held)
            self._register_lake(con, skip={name.lower() for name in warehouse})
            spill = self.settings.home / "tmp" / "query"
            spill.mkdir(parents=True, exist_ok=True)
            con.execute(f"SET memory_limit = '{self.memory_limit}'")
            con.execute(f"SET max_temp_directory_size = '{self.temp_limit}'")
            con.execute(f"SET temp_directory = {_sql_text(str(spill))}")
            con.execute("SET enable_external_access = false")
            con.execute("SET lock_configuration = true")
        except BaseException:
            con.close()
            raise
        return con

    def _attach_warehouse(
        self, con: duckdb.DuckDBPyConnection, sql: str, held: list[Lease]
    ) -> list[str]:
        url = str(self.settings.warehouse_url)
        if is_postgres_url(url):
            tables = pg_tables_in(url, sql)
            for index, table in enumerate(tables):
                source = f"__warehouse_{index}"
                con.register(source, table)
                con.execute(f"CREATE VIEW {quote(table.info.name)} AS SELECT * FROM {source}")
            return [table.info.name for table in tables]
        path = duckdb_path(url)
        if not os.path.exists(path):
            return []
        shared = self._lease(path)
        held.append(shared)
        names = [
            str(row[0])
            for row in shared.main.execute(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
                "AND schema_name = 'main' AND table_name <> ?",
                [MARKER_TABLE],
            ).fetchall()
        ]
        con.execute(f"ATTACH ':memory:' AS {WAREHOUSE}")
        for index, name in enumerate(names):
            source = f"__warehouse_{index}"
            con.register(source, _WarehouseTable(shared, name))
            con.execute(f"CREATE VIEW {WAREHOUSE}.main.{quote(name)} AS SELECT * FROM {source}")
            con.execute(f"CREATE VIEW {quote(name)} AS SELECT * FROM {source}")
        return names

    def _lease(self, path: str) -> Lease:
        try:
            return lease(path, wait=self.lock_wait)
        except duckdb.Error as exc:
            if not is_lock_error(exc):
                raise QueryError(f"cannot open the warehouse {path}: {_first_line(exc)}") from None
            raise QueryError(
                f"the warehouse {path} is being written by another process and stayed locked "
                f"for {self.lock_wait:g}s; try again ({_first_line(exc)})"
            ) from None

    def _register_lake(self, con: duckdb.DuckDBPyConnection, skip: set[str]) -> None:
        con.execute(f"CREATE SCHEMA {LAKE_SCHEMA}")
        for index, name in enumerate(lake_table_names(self.settings)):
            dataset = self._dataset(name)
            if dataset is None:
                continue
            source = f"__lake_{index}"
            con.register(source, dataset)
            con.execute(f"CREATE VIEW {LAKE_SCHEMA}.{quote(name)} AS SELECT * FROM {source}")
            if name.lower() not in skip:
                con.execute(f"CREATE VIEW {quote(name)} AS SELECT * FROM {source}")

    def _delta(self, name: str) -> DeltaTable | None:
        with self._cache_lock:
            delta = self._deltas.get(name)
            if delta is None:
                delta = open_delta(self.settings.lake_path(name))
                if delta is not None:
                    self._deltas[name] = delta
            else:
                delta.update_incremental()
            return delta

    def _dataset(self, name: str) -> pads.Dataset | None:
        delta = self._delta(name)
        if delta is None:
            return None
        with self._cache_lock:
            cached = self._datasets.get(name)
            if cached is None or cached[0] != delta.version():
                cached = (delta.version(), delta.to_pyarrow_dataset())
                self._datasets[name] = cached
            return cached[1]

    def _warehouse_infos(self) -> list[TableInfo]:
        url = str(self.settings.warehouse_url)
        if is_postgres_url(url):
            return pg_table_infos(url)
        path = duckdb_path(url)
        if not os.path.exists(path):
            return []
        shared = self._lease(path)
        try:
            return _duckdb_infos(shared.main)
        finally:
            shared.release()


def _duckdb_infos(con: duckdb.DuckDBPyConnection) -> list[TableInfo]:
    rows = con.execute(
        "SELECT table_name, list(column_name ORDER BY column_index), "
        "list(data_type ORDER BY column_index) FROM duckdb_columns() "
        "WHERE database_name = current_database() AND schema_name = 'main' "
        "AND table_name <> ? GROUP BY table_name",
        [MARKER_TABLE],
    ).fetchall()
    infos = []
    for name, columns, types in rows:
        count = con.execute(f"SELECT count(*) FROM main.{quote(name)}").fetchall()[0][0]
        infos.append(TableInfo(str(name), "warehouse", int(count), list(columns), list(types)))
    return infos


def _first_rows(
    relation: duckdb.DuckDBPyRelation, limit: int | None, max_bytes: int | None
) -> pa.Table:
    """The first ``limit`` rows (all when None), refused once past ``max_bytes``."""
    rows = limit if limit is not None else sys.maxsize
    if limit is not None:  # a LIMIT on top stops the scans (a stream alone reads ahead)
        relation = relation.limit(limit)
    reader: Any = relation.to_arrow_reader(max(1, min(rows, _STREAM_ROWS)))
    batches, have, size = [], 0, 0
    for batch in reader:
        if have >= rows:
            break
        batch = batch.slice(0, rows - have)
        size += batch.nbytes
        if max_bytes is not None and size > max_bytes:
            raise ResultTooLargeError(max_bytes)
        batches.append(batch)
        have += batch.num_rows
    return pa.Table.from_batches(batches, schema=reader.schema)


def _size_setting(value: str) -> str:
    """A DuckDB size setting (``512MB``, ``2GiB``...) checked before it reaches SQL."""
    if not _SIZE.match(value):
        raise QueryError(f"invalid size {value!r}: use a number and a unit, like 512MB or 2GB")
    return value


def _sql_text(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _pg_connect(url: str) -> Any:
    from sluice.connectors.warehouse import redact_url
    from sluice.core.deps import require

    psycopg = require("psycopg", "postgres", "the PostgreSQL warehouse")
    url = "postgresql://" + url.split("://", 1)[1]
    try:
        return psycopg.connect(url, connect_timeout=10)
    except psycopg.Error as exc:
        raise QueryError(
            f"cannot connect to the warehouse {redact_url(url)}: {_first_line(exc)}"
        ) from None


_PG_TABLES = (
    "SELECT c.table_name, array_agg(c.column_name::text ORDER BY c.ordinal_position), "
    "array_agg(c.data_type::text ORDER BY c.ordinal_position), max(k.reltuples)::bigint "
    "FROM information_schema.columns c JOIN information_schema.tables t "
    "ON t.table_schema = c.table_schema AND t.table_name = c.table_name "
    "LEFT JOIN pg_class k ON k.oid = (quote_ident(c.table_schema) || '.' || "
    "quote_ident(c.table_name))::regclass "
    "WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE' "
    f"AND c.table_name <> '{MARKER_TABLE}' GROUP BY c.table_name"
)


def pg_table_infos(url: str) -> list[TableInfo]:
    """The PostgreSQL warehouse's tables in the connection's current schema."""
    with _pg_connect(url) as conn:
        rows = conn.execute(_PG_TABLES).fetchall()
    return [
        TableInfo(
            str(name),
            "warehouse",
            int(rows) if rows is not None and rows >= 0 else None,
            list(columns),
            list(types),
        )
        for name, columns, types, rows in rows
    ]


_PG_ARROW = {
    "bigint": pa.int64(),
    "integer": pa.int32(),
    "smallint": pa.int16(),
    "double precision": pa.float64(),
    "real": pa.float32(),
    "numeric": pa.float64(),
    "boolean": pa.bool_(),
    "date": pa.date32(),
    "timestamp with time zone": pa.timestamp("us", "UTC"),
    "timestamp without time zone": pa.timestamp("us"),
    "text": pa.string(),
    "character varying": pa.string(),
    "bytea": pa.binary(),
}


class PgTable:
    """A PostgreSQL table as a re-readable Arrow stream over a server-side cursor."""

    def __init__(self, url: str, info: TableInfo) -> None:
        self.url, self.info = url, info
        self.schema = pa.schema(
            [
                pa.field(name, _PG_ARROW.get(kind, pa.string()))
                for name, kind in zip(info.columns, info.types, strict=True)
            ]
        )

    def __arrow_c_stream__(self, requested_schema: object = None) -> object:
        """A stream of the table's rows, read batch by batch as DuckDB asks."""
        reader = pa.RecordBatchReader.from_batches(self.schema, self.batches())
        return reader.__arrow_c_stream__(requested_schema)

    def batches(self) -> Iterator[pa.RecordBatch]:
        """Record batches of at most ``_STREAM_ROWS`` rows (the cursor closes when dropped)."""
        with _pg_connect(self.url) as conn, conn.cursor(name="sluice_scan") as cur:
            cur.execute(f"SELECT * FROM {quote(self.info.name)}")
            while rows := cur.fetchmany(_STREAM_ROWS):
                yield self._batch(rows)

    def _batch(self, rows: list[tuple[Any, ...]]) -> pa.RecordBatch:
        arrays = []
        for column, values in zip(self.schema, zip(*rows, strict=True), strict=True):
            if pa.types.is_string(column.type):
                values = tuple(None if v is None else str(v) for v in values)
            elif column.type == pa.float64():
                values = tuple(None if v is None else float(v) for v in values)
            arrays.append(pa.array(values, column.type))
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)


def pg_tables_in(url: str, sql: str) -> list[PgTable]:
    """The PostgreSQL tables whose names appear in ``sql``, as streams."""
    with _pg_connect(url) as conn:
        infos = [i for i in _pg_infos(conn) if _mentions(sql, i.name)]
    return [PgTable(url, info) for info in infos]


def _pg_infos(conn: Any) -> list[TableInfo]:
    return [
        TableInfo(str(name), "warehouse", None, list(columns), list(types))
        for name, columns, types, _ in conn.execute(_PG_TABLES).fetchall()
    ]


def _mentions(sql: str, name: str) -> bool:
    return re.search(rf"(?<![\w$]){re.escape(name)}(?![\w$])", sql, re.IGNORECASE) is not None
