"""The ``warehouse`` sink: each epoch lands in a SQL table once, with a marker in the same
transaction.

Where: the ``url`` option, else ``settings.warehouse_url`` (``SLUICE_WAREHOUSE_URL``):

* a path (or ``duckdb:///path``): a DuckDB file. Each write leases a cursor of the
  process's one shared attachment of the file (``connectors.duckdb_shared``; queries of
  the same process lease it too, and read snapshots without blocking the write); when
  nothing else of the process uses it, the file is detached (closed) after the write, so
  other processes (``sluice query``) can read between epochs. Rows go in straight from Arrow
  (``INSERT ... BY NAME``). ``keep_open: true`` keeps the lease (faster for tiny epochs;
  readers in other processes are then locked out). A file locked by another process is
  waited for ``lock_wait`` seconds (default 2), then the write fails with
  TransientSinkError so the runner backs off and retries.
* ``postgresql://...``: PostgreSQL through psycopg 3 (``pip install "sluice[postgres]"``);
  rows are bulk-loaded with ``COPY ... FROM STDIN`` fed by pyarrow's CSV writer. The
  ``schema`` option picks the schema (default: the connection's ``current_schema()``).
* ``redshift://...``: Amazon Redshift (:mod:`sluice.sinks.redshift`): each epoch is staged
  as Parquet on S3 (option ``staging``) and loaded with ``COPY ... FORMAT AS PARQUET`` in
  the transaction that records the marker; options ``iam_role``, ``varchar_length``.

Idempotency: the marker table ``_sluice_epochs(pipeline, sink_table, epoch, written_at)``
gets one row per mark (``pipeline`` holds the mark's stream: the pipeline, or
``pipeline#topic/partition`` for a partition task) in the transaction that inserts the rows;
a write whose mark is at or below the last marked epoch of its ``(stream, table)`` is
skipped. The table is created from the Arrow schema on first write; new columns are added
with ``ALTER TABLE ... ADD COLUMN``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import duckdb
import pyarrow as pa

from sluice.config.models import SinkConfig
from sluice.connectors.duckdb_shared import (
    Lease,
    WarehouseBusyError,
    lease,
    register_writer,
    unregister_writer,
)
from sluice.connectors.warehouse import (
    BATCH_VIEW,
    LOCK_WAIT_SECONDS,
    MARKER_TABLE,
    duckdb_path,
    is_lock_error,
    is_postgres_url,
    quote,
    redact_url,
)
from sluice.core.errors import ConfigError, SinkError, TransientSinkError
from sluice.sinks.base import Marks, Sink, SinkContext
from sluice.sinks.lake import lake_ready

# The PostgreSQL and Redshift backends are imported when a URL needs them: a DuckDB
# warehouse loads neither.
__all__ = ["MARKER_TABLE", "WarehouseSink"]


class WarehouseBackend(Protocol):
    """One database flavour: writes an epoch and its marker in one transaction."""

    def write(self, marks: dict[str, int], table: str, data: pa.Table) -> bool:
        """Write ``data`` into ``table`` under ``marks``; False if already written."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...


class WarehouseSink(Sink):
    """Writes epochs to a DuckDB, PostgreSQL or Redshift table, exactly once each."""

    def __init__(self, config: SinkConfig, context: SinkContext) -> None:
        super().__init__(config, context)
        if not config.table:
            raise ConfigError("a warehouse sink needs a table name", key="table")
        self.table_name = config.table
        options = config.options
        url = str(options.get("url") or context.settings.warehouse_url)
        self.backend: WarehouseBackend
        if url.startswith("redshift://"):
            from sluice.sinks.redshift import RedshiftWarehouse

            length = options.get("varchar_length")
            self.backend = RedshiftWarehouse(
                url,
                staging=options.get("staging"),
                schema=options.get("schema"),
                iam_role=options.get("iam_role"),
                varchar_length=int(length) if length is not None else None,
            )
        elif is_postgres_url(url):
            from sluice.sinks.postgres import PostgresWarehouse

            self.backend = PostgresWarehouse(url, schema=options.get("schema"))
        else:
            self.backend = DuckDBWarehouse(
                duckdb_path(url),
                keep_open=bool(options.get("keep_open", False)),
                lock_wait=float(options.get("lock_wait", LOCK_WAIT_SECONDS)),
            )

    def write(self, table: pa.Table, epoch: int | Marks) -> bool:
        """Insert ``table`` as ``epoch`` with its marker; False if already written."""
        marks = self.marks(epoch)
        if table.num_rows == 0:
            return True
        return self.backend.write(marks, self.table_name, lake_ready(table))

    def close(self) -> None:
        """Close the database connection."""
        self.backend.close()


def _quietly(con: duckdb.DuckDBPyConnection, statement: str | None) -> None:
    """Run ``statement`` (or unregister the batch view) ignoring errors: cleanup only."""
    try:
        if statement is None:
            con.unregister(BATCH_VIEW)
        else:
            con.execute(statement)
    except duckdb.Error:
        pass


class DuckDBWarehouse:
    """A DuckDB file warehouse, leased from this process's shared instance per write.

    Unless ``keep_open``, the lease ends after each write, so the file is closed between
    epochs when nothing else of this process (a query) uses it.
    """

    def __init__(
        self, path: str, keep_open: bool = False, lock_wait: float = LOCK_WAIT_SECONDS
    ) -> None:
        self.path = path
        self.keep_open = keep_open
        self.lock_wait = lock_wait
        self._lease: Lease | None = None
        self._registered = path != ":memory:"
        if self._registered:
            register_writer(path)

    def write(self, marks: dict[str, int], table: str, data: pa.Table) -> bool:
        """Insert the rows and the markers in one DuckDB transaction."""
        held = self._connect()
        con = held.main
        try:
            con.execute("BEGIN TRANSACTION")
            try:
                written = self._write_in_transaction(con, marks, table, data)
                con.execute("COMMIT" if written else "ROLLBACK")
            except BaseException:
                _quietly(con, "ROLLBACK")
                raise
            finally:
                _quietly(con, None)
            return written
        except duckdb.Error as exc:
            self._drop(held)
            if isinstance(exc, duckdb.TransactionException | duckdb.OutOfMemoryException):
                raise TransientSinkError(f"warehouse table {table!r}: {exc}") from exc
            if is_lock_error(exc):
                raise TransientSinkError(f"warehouse table {table!r}: {exc}") from exc
            raise SinkError(f"warehouse table {table!r}: {exc}") from exc
        finally:
            if not self.keep_open:
                self._drop(held)

    def close(self) -> None:
        """Release the kept lease, if any, and stop counting as a writer of the file."""
        if self._lease is not None:
            self._drop(self._lease)
        if self._registered:
            self._registered = False
            unregister_writer(self.path)

    def _connect(self) -> Lease:
        if self._lease is not None:
            return self._lease
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            held = lease(self.path, write=True, wait=self.lock_wait)
        except duckdb.Error as exc:
            if is_lock_error(exc) or isinstance(exc, WarehouseBusyError):
                raise TransientSinkError(f"warehouse {self.path} is locked: {exc}") from exc
            raise SinkError(f"cannot open warehouse {self.path}: {exc}") from exc
        try:
            held.main.execute(
                f"CREATE TABLE IF NOT EXISTS {MARKER_TABLE} (pipeline VARCHAR, "
                "sink_table VARCHAR, epoch BIGINT, written_at TIMESTAMPTZ)"
            )
        except duckdb.Error as exc:
            held.release()
            raise TransientSinkError(f"warehouse {self.path}: {exc}") from exc
        if self.keep_open:
            self._lease = held
        return held

    def _drop(self, held: Lease) -> None:
        if held is self._lease:
            self._lease = None
        held.release()

    def _write_in_transaction(
        self, con: duckdb.DuckDBPyConnection, marks: dict[str, int], table: str, data: pa.Table
    ) -> bool:
        for stream, epoch in marks.items():
            rows = con.execute(
                f"SELECT max(epoch) FROM {MARKER_TABLE} WHERE pipeline = ? AND sink_table = ?",
                [stream, table],
            ).fetchall()
            if rows[0][0] is not None and rows[0][0] >= epoch:
                return False
        con.register(BATCH_VIEW, data)
        self._ensure_columns(con, table)
        con.execute(f"INSERT INTO {quote(table)} BY NAME SELECT * FROM {BATCH_VIEW}")
        con.executemany(
            f"INSERT INTO {MARKER_TABLE} VALUES (?, ?, ?, now())",
            [[stream, table, epoch] for stream, epoch in sorted(marks.items())],
        )
        return True

    def _ensure_columns(self, con: duckdb.DuckDBPyConnection, table: str) -> None:
        existing = con.execute(
            "SELECT lower(column_name) FROM duckdb_columns() "
            "WHERE database_name = current_database() AND schema_name = current_schema() "
            "AND table_name = ?",
            [table],
        ).fetchall()
        if not existing:
            con.execute(f"CREATE TABLE {quote(table)} AS SELECT * FROM {BATCH_VIEW} LIMIT 0")
            return
        have = {name for (name,) in existing}
        for name, sql_type, *_ in con.execute(f"DESCRIBE SELECT * FROM {BATCH_VIEW}").fetchall():
            if str(name).lower() not in have:
                con.execute(f"ALTER TABLE {quote(table)} ADD COLUMN {quote(name)} {sql_type}")


def describe_backend(url: str) -> dict[str, Any]:
    """Which warehouse a URL names, without credentials (for status output)."""
    if is_postgres_url(url):
        return {
            "kind": "redshift" if url.startswith("redshift://") else "postgresql",
            "url": redact_url(url),
        }
    return {"kind": "duckdb", "path": duckdb_path(url)}
