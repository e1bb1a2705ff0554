"""Redshift's ``COPY ... FROM 's3://...' FORMAT AS PARQUET`` replayed on PostgreSQL.

``COPY FROM S3`` exists only on Redshift. ``ReplayConnection`` wraps a psycopg connection:
every statement goes to PostgreSQL unchanged except that COPY, which it runs as Redshift
would — it reads the Parquet files staged under the prefix (from the moto S3 server) and
loads them into the table by column position with ``COPY ... FROM STDIN``. It records the
statements and the files it found, so tests can check the SQL and the staging.
"""

from __future__ import annotations

import io
from typing import Any

import psycopg
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from sluice.sinks.postgres import csv_ready
from sluice.sinks.redshift import COPY_PATTERN, ParquetStage

# Redshift's GETDATE() (the marker table's default), for PostgreSQL.
GETDATE = "CREATE OR REPLACE FUNCTION getdate() RETURNS timestamptz LANGUAGE sql AS 'SELECT now()'"


class ReplayConnection:
    """A psycopg connection whose Parquet COPY from S3 is replayed from the staged files."""

    def __init__(self, conn: psycopg.Connection[Any], fail_on: str | None = None) -> None:
        self._conn = conn
        self.fail_on = fail_on
        self.statements: list[str] = []
        self.replayed: list[list[str]] = []
        with conn.transaction():
            conn.execute(GETDATE)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def cursor(self) -> ReplayCursor:
        """A cursor that replays COPY FROM S3."""
        return ReplayCursor(self._conn.cursor(), self)


class ReplayCursor:
    """Passes statements through; runs the Parquet COPY from the staged files."""

    def __init__(self, cursor: psycopg.Cursor[Any], owner: ReplayConnection) -> None:
        self._cursor = cursor
        self.owner = owner

    def __enter__(self) -> ReplayCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self._cursor.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)

    def execute(self, sql: str, params: Any = None) -> None:
        """Record and run ``sql`` (replaying a Parquet COPY from S3)."""
        self._check(sql)
        match = COPY_PATTERN.match(sql)
        if match is None:
            self._cursor.execute(sql, params)
            return
        files = ParquetStage(match["prefix"]).files(match["prefix"])
        self.owner.replayed.append(files)
        for url in files:
            self._load(match["target"], url)

    def executemany(self, sql: str, rows: Any) -> None:
        """Record and run ``sql`` for each row."""
        self._check(sql)
        self._cursor.executemany(sql, rows)

    def _check(self, sql: str) -> None:
        self.owner.statements.append(sql)
        if self.owner.fail_on is not None and self.owner.fail_on in sql:
            raise psycopg.OperationalError(f"injected failure at {self.owner.fail_on!r}")

    def _load(self, target: str, url: str) -> None:
        import pyarrow.fs as pafs

        filesystem, path = pafs.FileSystem.from_uri(url)
        data = csv_ready(pq.read_table(path, filesystem=filesystem))
        buffer = io.BytesIO()
        pacsv.write_csv(data, buffer, pacsv.WriteOptions(include_header=False))
        # Redshift maps Parquet columns to the table's columns by position: so does this.
        with self._cursor.copy(f"COPY {target} FROM STDIN (FORMAT csv)") as copy:
            copy.write(buffer.getvalue())
