"""The Redshift flavour of the ``warehouse`` sink: Parquet staged on S3, then ``COPY``.

For each epoch the batch is written as Parquet under an epoch-keyed prefix of the
``staging`` location (``s3://bucket/prefix``, option ``staging`` or
``SLUICE_REDSHIFT_STAGING``): ``<staging>/<table>/<stream>/epoch=<n>/part-00000.parquet``.
One transaction then checks the epoch marker, creates or widens the table,
``COPY <table> FROM '<prefix>/' IAM_ROLE ... FORMAT AS PARQUET`` and inserts the marker, so
each epoch lands exactly once. The staged files are deleted afterwards (also after a
failure; a retry stages them again).

Types: ``BIGINT``/``INTEGER``/``SMALLINT``, ``DOUBLE PRECISION``/``REAL``, ``BOOLEAN``,
``TIMESTAMPTZ``/``TIMESTAMP``, ``DATE``, ``NUMERIC``, ``VARBYTE``; text is ``VARCHAR(n)``
with ``n`` from the ``varchar_length`` option, else from the data (the longest value in
bytes, at least 256, rounded up to a power of two, at most 65535); a longer value later
widens the column (``ALTER COLUMN ... TYPE VARCHAR``). Nested values are stored as JSON
text; unsigned integers are widened to the next signed type. Parquet ``COPY`` maps
columns by position, so the staged file always has the table's columns in the table's
order (missing ones as nulls).
"""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import quote as url_quote

import pyarrow as pa
import pyarrow.compute as pc

from sluice.connectors.warehouse import quote
from sluice.core.errors import ConfigError, SinkError, TransientSinkError
from sluice.sinks.postgres import PostgresWarehouse, csv_ready, pg_type

VARCHAR_MAX = 65535
VARCHAR_MIN = 256
_DEFAULT_ROLE = "default"
_WIDER = {pa.uint8(): pa.int16(), pa.uint16(): pa.int32(), pa.uint32(): pa.int64()}


def varchar_size(longest: int, configured: int | None = None) -> int:
    """The ``VARCHAR`` length for text whose longest value has ``longest`` bytes."""
    if configured is not None:
        return max(configured, longest)
    size = VARCHAR_MIN
    while size < longest:
        size *= 2
    return min(size, VARCHAR_MAX)


def redshift_ready(data: pa.Table) -> pa.Table:
    """Cast what Redshift's Parquet COPY cannot take: nested → JSON text, unsigned → signed."""
    binary = {f.name: data.column(f.name) for f in data.schema if pa.types.is_binary(f.type)}
    rest = csv_ready(data.drop_columns(list(binary)))  # nested → JSON text
    columns, fields = [], []
    for field, column in zip(rest.schema, rest.columns, strict=True):
        target = field.type
        if pa.types.is_dictionary(target):
            target = target.value_type
        target = _WIDER.get(target, target)
        if pa.types.is_uint64(target):
            target = pa.decimal128(20, 0)
        if pa.types.is_large_string(target):
            target = pa.string()
        columns.append(column.cast(target) if target != field.type else column)
        fields.append(pa.field(field.name, target))
    for name, column in binary.items():  # Parquet carries bytes as they are (VARBYTE)
        columns.append(column)
        fields.append(pa.field(name, pa.binary()))
    return pa.Table.from_arrays(columns, schema=pa.schema(fields)).select(data.column_names)


def longest_bytes(column: pa.ChunkedArray) -> int:
    """The byte length of the longest value of a text column (0 when all null)."""
    lengths = pc.binary_length(column.cast(pa.binary()))
    top = pc.max(lengths).as_py()
    return int(top or 0)


class ParquetStage:
    """Epoch-keyed Parquet files under an ``s3://`` prefix."""

    def __init__(self, url: str) -> None:
        if not url.startswith(("s3://", "s3a://")):
            raise ConfigError(
                f"the Redshift warehouse stages Parquet on S3: staging must be an s3:// URL, "
                f"got {url!r}",
                key="staging",
            )
        self.url = url.rstrip("/")

    def prefix(self, table: str, marks: dict[str, int]) -> str:
        """The prefix of one epoch's files (ends with ``/``)."""
        stream, epoch = max(marks.items(), key=lambda item: item[1])
        return f"{self.url}/{url_quote(table, safe='')}/{url_quote(stream, safe='')}/epoch={epoch}/"

    def put(self, prefix: str, data: pa.Table) -> str:
        """Write ``data`` as the epoch's one Parquet file; its URL."""
        import pyarrow.parquet as pq

        url = f"{prefix}part-00000.parquet"
        filesystem, path = _filesystem(url)
        try:
            pq.write_table(data, path, filesystem=filesystem)
        except OSError as exc:
            raise TransientSinkError(f"cannot stage Parquet at {url}: {exc}") from exc
        return url

    def files(self, prefix: str) -> list[str]:
        """URLs of the files under ``prefix``, sorted."""
        import pyarrow.fs as pafs

        filesystem, path = _filesystem(prefix)
        selector = pafs.FileSelector(path.rstrip("/"), recursive=True, allow_not_found=True)
        infos = filesystem.get_file_info(selector)
        scheme = prefix.split("://", 1)[0]
        return sorted(f"{scheme}://{i.path}" for i in infos if i.type == pafs.FileType.File)

    def remove(self, prefix: str) -> None:
        """Delete the epoch's files (cleanup; errors are ignored, a later run retries)."""
        filesystem, path = _filesystem(prefix)
        try:
            filesystem.delete_dir_contents(path.rstrip("/"), missing_dir_ok=True)
            filesystem.delete_dir(path.rstrip("/"))
        except OSError:
            pass


def _filesystem(url: str) -> tuple[Any, str]:
    import pyarrow.fs as pafs

    return pafs.FileSystem.from_uri(url)


def copy_statement(target: str, prefix: str, iam_role: str) -> str:
    """``COPY target FROM 'prefix' IAM_ROLE ... FORMAT AS PARQUET``."""
    if "'" in prefix:
        raise SinkError(f"staging prefix {prefix!r} must not contain a quote")
    role = "default" if iam_role == _DEFAULT_ROLE else "'" + iam_role.replace("'", "''") + "'"
    return f"COPY {target} FROM '{prefix}' IAM_ROLE {role} FORMAT AS PARQUET"


COPY_PATTERN = re.compile(
    r"^COPY (?P<target>.+?) FROM '(?P<prefix>[^']+)' IAM_ROLE .+ FORMAT AS PARQUET$"
)


class RedshiftWarehouse(PostgresWarehouse):
    """Loads each epoch with ``COPY ... FORMAT AS PARQUET`` from files staged on S3."""

    written_at_default = "GETDATE()"

    def __init__(
        self,
        url: str,
        *,
        staging: str | None = None,
        schema: str | None = None,
        iam_role: str | None = None,
        varchar_length: int | None = None,
        connect: Any = None,
    ) -> None:
        super().__init__(url, schema=schema, connect=connect)
        where = staging or os.environ.get("SLUICE_REDSHIFT_STAGING")
        if not where:
            raise ConfigError(
                "a Redshift warehouse needs the 'staging' option (or SLUICE_REDSHIFT_STAGING): "
                "an s3:// prefix where each epoch is staged as Parquet for COPY",
                key="staging",
            )
        self.stage = ParquetStage(where)
        self.iam_role = iam_role or os.environ.get("SLUICE_REDSHIFT_IAM_ROLE") or _DEFAULT_ROLE
        if varchar_length is not None and not 1 <= varchar_length <= VARCHAR_MAX:
            raise ConfigError(
                f"varchar_length must be between 1 and {VARCHAR_MAX}", key="varchar_length"
            )
        self.varchar_length = varchar_length
        self._marks: dict[str, int] = {}
        self._staged: str | None = None

    def write(self, marks: dict[str, int], table: str, data: pa.Table) -> bool:
        """Stage, COPY and mark in one transaction; the staged files are removed after."""
        self._marks, self._staged = marks, None
        try:
            return super().write(marks, table, redshift_ready(data))
        finally:
            if self._staged is not None:
                self.stage.remove(self._staged)

    def _ensure_columns(self, cur: Any, table: str, schema: pa.Schema) -> None:
        """Nothing here: ``_load`` creates and widens columns, sized from the data."""

    def _load(self, cur: Any, table: str, data: pa.Table) -> None:
        self._create_or_widen(cur, table, data, self._columns(cur, table))
        staged = _conform(data, self._columns(cur, table))
        self._staged = self.stage.prefix(table, self._marks)
        self.stage.put(self._staged, staged)
        cur.execute(copy_statement(self._name(table), self._staged, self.iam_role))

    def _columns(self, cur: Any, table: str) -> list[tuple[str, str, int | None]]:
        """(name, SQL type, VARCHAR length) of the table's columns, in table order."""
        cur.execute(
            "SELECT column_name, data_type, character_maximum_length "
            "FROM information_schema.columns "
            "WHERE table_schema = COALESCE(%s, current_schema()) AND table_name = %s "
            "ORDER BY ordinal_position",
            (self.schema, table),
        )
        return [(str(name), str(kind), size) for name, kind, size in cur.fetchall()]

    def _create_or_widen(
        self, cur: Any, table: str, data: pa.Table, existing: list[tuple[str, str, int | None]]
    ) -> None:
        have = {name: size for name, _, size in existing}
        new = []
        for field in data.schema:
            text = pa.types.is_string(field.type)
            longest = longest_bytes(data.column(field.name)) if text else 0
            if longest > VARCHAR_MAX:
                raise SinkError(
                    f"warehouse table {table!r}: column {field.name!r} holds a value of "
                    f"{longest} bytes; Redshift VARCHAR holds at most {VARCHAR_MAX}"
                )
            if field.name not in have:
                kind = self._type(field.type, longest)
                new.append(f"{quote(field.name)} {kind}")
            elif text and (have[field.name] or VARCHAR_MAX) < longest:
                size = varchar_size(longest, self.varchar_length)
                cur.execute(
                    f"ALTER TABLE {self._name(table)} ALTER COLUMN {quote(field.name)} "
                    f"TYPE VARCHAR({size})"
                )
        if not have:
            cur.execute(f"CREATE TABLE IF NOT EXISTS {self._name(table)} ({', '.join(new)})")
            return
        for column in new:
            cur.execute(f"ALTER TABLE {self._name(table)} ADD COLUMN {column}")

    def _type(self, arrow_type: pa.DataType, longest: int) -> str:
        if pa.types.is_string(arrow_type):
            return f"VARCHAR({varchar_size(longest, self.varchar_length)})"
        return pg_type(arrow_type, redshift=True)


_SQL_TO_ARROW = {
    "bigint": pa.int64(),
    "integer": pa.int32(),
    "smallint": pa.int16(),
    "double precision": pa.float64(),
    "real": pa.float32(),
    "boolean": pa.bool_(),
    "date": pa.date32(),
    "timestamp with time zone": pa.timestamp("us", "UTC"),
    "timestamp without time zone": pa.timestamp("us"),
}


def _conform(data: pa.Table, columns: list[tuple[str, str, int | None]]) -> pa.Table:
    """The table's columns in the table's order (Parquet COPY maps by position); columns
    the batch lacks are typed nulls."""
    arrays, names = [], []
    for name, kind, _ in columns:
        names.append(name)
        if name in data.column_names:
            arrays.append(data.column(name))
        else:
            arrays.append(pa.nulls(data.num_rows, _SQL_TO_ARROW.get(kind, pa.string())))
    return pa.Table.from_arrays(arrays, names=names)
