"""PostgreSQL for the ``warehouse`` sink: column types, CSV-ready batches, ``COPY`` loads.

Rows are bulk-loaded with ``COPY ... FROM STDIN`` fed by pyarrow's CSV writer, in the
transaction that records the epoch marker (see :mod:`sluice.sinks.warehouse`).
"""

from __future__ import annotations

from typing import Any

import duckdb
import pyarrow as pa

from sluice.connectors.warehouse import BATCH_VIEW, MARKER_TABLE, quote, redact_url
from sluice.core.deps import require
from sluice.core.errors import SinkError, TransientSinkError


def pg_type(arrow_type: pa.DataType, redshift: bool = False) -> str:
    """The PostgreSQL (or Redshift) column type for an Arrow type."""
    t = arrow_type
    if pa.types.is_dictionary(t):
        return pg_type(t.value_type, redshift)
    simple = [
        (pa.types.is_boolean, "BOOLEAN"),
        (pa.types.is_int8, "SMALLINT"),
        (pa.types.is_int16, "SMALLINT"),
        (pa.types.is_uint8, "SMALLINT"),
        (pa.types.is_int32, "INTEGER"),
        (pa.types.is_uint16, "INTEGER"),
        (pa.types.is_int64, "BIGINT"),
        (pa.types.is_uint32, "BIGINT"),
        (pa.types.is_uint64, "NUMERIC(20, 0)"),
        (pa.types.is_float16, "REAL"),
        (pa.types.is_float32, "REAL"),
        (pa.types.is_float64, "DOUBLE PRECISION"),
        (pa.types.is_date, "DATE"),
        (pa.types.is_time, "TIME"),
    ]
    for check, name in simple:
        if check(t):
            return name
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ" if t.tz is not None else "TIMESTAMP"
    if pa.types.is_decimal(t):
        return f"NUMERIC({t.precision}, {t.scale})"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "VARBYTE" if redshift else "BYTEA"
    if pa.types.is_nested(t):
        return "SUPER" if redshift else "JSONB"
    return "VARCHAR(65535)" if redshift else "TEXT"


def csv_ready(data: pa.Table) -> pa.Table:
    """Cast columns pyarrow's CSV writer cannot write: nested → JSON text, binary → hex."""
    replace = []
    for field in data.schema:
        if pa.types.is_nested(field.type):
            replace.append(f"to_json({quote(field.name)})::VARCHAR AS {quote(field.name)}")
        elif pa.types.is_binary(field.type) or pa.types.is_large_binary(field.type):
            replace.append(f"'\\x' || hex({quote(field.name)}) AS {quote(field.name)}")
    if not replace:
        return data
    con = duckdb.connect()
    try:
        con.register(BATCH_VIEW, data)
        relation = con.sql(f"SELECT * REPLACE ({', '.join(replace)}) FROM {BATCH_VIEW}")
        return relation.to_arrow_table() if relation is not None else data
    finally:
        con.close()


class PostgresWarehouse:
    """A PostgreSQL (or Redshift) warehouse over one kept psycopg connection."""

    # the marker's write time: now() is leader-node-only on Redshift, GETDATE() Redshift-only
    written_at_default = "now()"

    def __init__(self, url: str, schema: str | None = None, connect: Any = None) -> None:
        self.redshift = url.startswith("redshift://")
        self.url = "postgresql://" + url.split("://", 1)[1] if self.redshift else url
        self.schema = schema
        self.connect = connect  # psycopg.connect unless given (tests replay Redshift COPY)
        self._conn: Any = None

    def write(self, marks: dict[str, int], table: str, data: pa.Table) -> bool:
        """Insert rows (COPY) and the markers in one transaction."""
        psycopg = require("psycopg", "postgres", "the PostgreSQL warehouse")
        try:
            conn = self._connect(psycopg)
            with conn.transaction(), conn.cursor() as cur:
                if any(self._last_epoch(cur, s, table) >= e for s, e in marks.items()):
                    return False
                self._ensure_columns(cur, table, data.schema)
                self._load(cur, table, data)
                cur.executemany(
                    f"INSERT INTO {self._name(MARKER_TABLE)} "
                    "(pipeline, sink_table, epoch) VALUES (%s, %s, %s)",
                    [(stream, table, epoch) for stream, epoch in sorted(marks.items())],
                )
            return True
        except psycopg.Error as exc:
            raise self._classify(psycopg, exc, table) from exc

    def close(self) -> None:
        """Close the connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connect(self, psycopg: Any) -> Any:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        try:
            self._conn = (self.connect or psycopg.connect)(self.url, connect_timeout=10)
        except psycopg.Error as exc:
            raise TransientSinkError(
                f"cannot connect to the warehouse {redact_url(self.url)}: "
                f"{str(exc).strip().splitlines()[0]}"
            ) from None
        with self._conn.transaction(), self._conn.cursor() as cur:
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {self._name(MARKER_TABLE)} ("
                "pipeline VARCHAR(512) NOT NULL, sink_table VARCHAR(512) NOT NULL, "
                f"epoch BIGINT NOT NULL, written_at TIMESTAMPTZ DEFAULT {self.written_at_default}, "
                "PRIMARY KEY (pipeline, sink_table, epoch))"
            )
        return self._conn

    def _classify(self, psycopg: Any, exc: Exception, table: str) -> SinkError:
        errors = psycopg.errors
        transient = (
            psycopg.OperationalError,
            psycopg.InterfaceError,
            errors.LockNotAvailable,
            errors.DeadlockDetected,
            errors.SerializationFailure,
            errors.UniqueViolation,
        )  # a racing writer marked the epoch first
        message = f"warehouse table {table!r}: {str(exc).strip().splitlines()[0]}"
        if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
            self.close()
        if isinstance(exc, transient):
            return TransientSinkError(message)
        return SinkError(message)

    def _name(self, table: str) -> str:
        return f"{quote(self.schema)}.{quote(table)}" if self.schema else quote(table)

    def _last_epoch(self, cur: Any, pipeline: str, table: str) -> int:
        cur.execute(
            f"SELECT max(epoch) FROM {self._name(MARKER_TABLE)} "
            "WHERE pipeline = %s AND sink_table = %s",
            (pipeline, table),
        )
        row = cur.fetchone()
        return -1 if row is None or row[0] is None else int(row[0])

    def _ensure_columns(self, cur: Any, table: str, schema: pa.Schema) -> None:
        cur.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = COALESCE(%s, current_schema()) AND table_name = %s",
            (self.schema, table),
        )
        have = {name for (name,) in cur.fetchall()}
        columns = [
            f"{quote(f.name)} {pg_type(f.type, self.redshift)}"
            for f in schema
            if f.name not in have
        ]
        if not have:
            cur.execute(f"CREATE TABLE IF NOT EXISTS {self._name(table)} ({', '.join(columns)})")
        for column in columns if have else []:
            cur.execute(f"ALTER TABLE {self._name(table)} ADD COLUMN {column}")

    def _load(self, cur: Any, table: str, data: pa.Table) -> None:
        import io

        import pyarrow.csv as pacsv

        columns = ", ".join(quote(name) for name in data.column_names)
        data = csv_ready(data)
        options = pacsv.WriteOptions(include_header=False)
        with cur.copy(f"COPY {self._name(table)} ({columns}) FROM STDIN (FORMAT csv)") as copy:
            for batch in data.to_batches(max_chunksize=100_000):
                buffer = io.BytesIO()
                pacsv.write_csv(batch, buffer, options)
                copy.write(buffer.getbuffer())
