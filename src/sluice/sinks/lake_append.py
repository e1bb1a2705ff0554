"""Appending to a local Delta table without delta-rs: Parquet files and one log entry.

A ``write_deltalake`` append costs about 10 ms of CPU whatever its size (a DataFusion
write plan, then the commit re-reads the log and rebuilds the snapshot). A small epoch
on a local table instead writes its Parquet file(s) with pyarrow and commits the log
entry ``_delta_log/<version>.json`` itself, created atomically with ``os.link`` (which
fails when the version exists: another writer won it, and the sink reads the log again
and retries at the next version, as delta-rs does). The entry holds the ``add`` actions
with their statistics and the ``txn`` actions (the sink's exactly-once marks), so a
reader, a checkpoint or a compaction sees exactly what a delta-rs append would write.

Only plain tables qualify (``direct_append_ok``): protocol (1, 2) (no table features, no
column mapping), no CHECK constraints, invariants or generated columns, default statistics
settings, partition columns of date, integer or simple string values. Anything else
(schema changes included) goes through ``write_deltalake``.
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sluice.storage.lake_tables import DELTA_LOG

if TYPE_CHECKING:
    from deltalake import DeltaTable

STATS_COLUMNS = 32  # delta.dataSkippingNumIndexedCols default
STRING_STATS = 32  # characters of a string min value kept (a prefix is still a lower bound)
_STATS_OPTIONS = ("delta.dataSkippingNumIndexedCols", "delta.dataSkippingStatsColumns")
_SAFE_VALUE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def direct_append_ok(delta: DeltaTable) -> bool:
    """True when an append to ``delta`` may bypass delta-rs (a plain protocol 1/2 table)."""
    protocol = delta.protocol()
    if protocol.min_reader_version != 1 or protocol.min_writer_version > 2:
        return False
    metadata = delta.metadata()
    config = metadata.configuration
    if any(key.startswith("delta.constraints.") for key in config) or any(
        key in config for key in _STATS_OPTIONS
    ):
        return False
    schema = delta.schema()
    return not any(
        key.startswith("delta.") for field in schema.fields for key in (field.metadata or {})
    )


def _partition_value(value: Any, type_: pa.DataType) -> str | None:
    """The Delta partition value string of ``value``; None when this writer cannot encode it."""
    if value is None:
        return None
    if pa.types.is_date32(type_):
        text = value.isoformat()
    elif pa.types.is_integer(type_) and not isinstance(value, bool):
        text = str(int(value))
    elif pa.types.is_string(type_) and isinstance(value, str):
        text = value
    else:
        return None
    return text if text and set(text) <= _SAFE_VALUE else None


def _distinct(table: pa.Table, columns: list[str]) -> list[dict[str, pa.Scalar]]:
    """The distinct values of ``columns`` in ``table``, as Arrow scalars of the columns' types.

    One column (the usual ``event_date``) is read with ``pc.unique``: ``Table.group_by``
    imports pyarrow's dataset module, and with it pandas (see ``sluice.core.arrays``).
    """
    if len(columns) == 1:
        return [{columns[0]: value} for value in pc.unique(table.column(columns[0]))]
    distinct = table.select(columns).group_by(columns).aggregate([])
    return [{name: distinct.column(name)[i] for name in columns} for i in range(distinct.num_rows)]


def split_partitions(
    table: pa.Table, partitions: list[str]
) -> list[tuple[dict[str, str], pa.Table]] | None:
    """``table`` split by its partition values (partition columns dropped), or None when a
    value is one this writer does not encode (null, a timestamp, special characters)."""
    if not partitions:
        return [({}, table)]
    types = [table.schema.field(name).type for name in partitions]
    keys = _distinct(table, partitions)
    parts = []
    for key in keys:
        values: dict[str, str] = {}
        mask = None
        for name, type_ in zip(partitions, types, strict=True):
            text = _partition_value(key[name].as_py(), type_)
            if text is None:
                return None
            values[name] = text
            equal = pc.equal(table.column(name), key[name])
            mask = equal if mask is None else pc.and_(mask, equal)
        part = table if len(keys) == 1 else table.filter(mask)
        parts.append((values, part.drop_columns(partitions)))
    return parts


def _json_value(value: Any, type_: pa.DataType, *, upper: bool) -> Any:
    """A statistics value as Delta writes it in JSON; None to leave the column out."""
    if value is None:
        return None
    if pa.types.is_boolean(type_) or pa.types.is_integer(type_):
        return value
    if pa.types.is_floating(type_):
        return float(value) if math.isfinite(value) else None
    if pa.types.is_date32(type_):
        return value.isoformat()
    if pa.types.is_timestamp(type_) and type_.tz is not None:
        # Delta keeps milliseconds: round the lower bound down and the upper one up
        micros = value  # epoch microseconds (see _bound)
        millis = -(-micros // 1000) if upper else micros // 1000
        stamp = _EPOCH + timedelta(milliseconds=millis)
        return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"
    if pa.types.is_string(type_):
        if not upper:
            return value[:STRING_STATS]
        return value if len(value) <= STRING_STATS else None
    return None


_MICROS_PER_UNIT = {"s": 1_000_000, "ms": 1000, "us": 1}


def _bound(value: pa.Scalar, type_: pa.DataType) -> Any:
    """The Python value of a min/max bound; a timestamp with a time zone as epoch microseconds
    (rounded down), without ``as_py`` (which imports pandas for it: see ``sluice.core.arrays``)."""
    if pa.types.is_timestamp(type_) and type_.tz is not None:
        raw = value.value
        if raw is None:
            return None
        unit = type_.unit
        return raw // 1000 if unit == "ns" else raw * _MICROS_PER_UNIT[unit]
    return value.as_py()


def file_stats(table: pa.Table) -> str:
    """The ``stats`` JSON of a data file holding ``table``: row count, and per column (the
    first 32) its null count and, where it is an exact or safe bound, min and max."""
    minimum: dict[str, Any] = {}
    maximum: dict[str, Any] = {}
    nulls: dict[str, int] = {}
    for field in list(table.schema)[:STATS_COLUMNS]:
        type_ = field.type
        if pa.types.is_nested(type_):
            continue
        column = table.column(field.name)
        nulls[field.name] = column.null_count
        if column.null_count == len(column) or not _has_stats(type_):
            continue
        if pa.types.is_floating(type_) and pc.any(pc.is_nan(column)).as_py():
            continue  # NaN has no place in a min/max bound
        bounds = pc.min_max(column)
        low = _json_value(_bound(bounds["min"], type_), type_, upper=False)
        high = _json_value(_bound(bounds["max"], type_), type_, upper=True)
        if low is not None:
            minimum[field.name] = low
        if high is not None:
            maximum[field.name] = high
    stats = {
        "numRecords": table.num_rows,
        "minValues": minimum,
        "maxValues": maximum,
        "nullCount": nulls,
    }
    return json.dumps(stats, separators=(",", ":"))


def _has_stats(type_: pa.DataType) -> bool:
    return (
        pa.types.is_boolean(type_)
        or pa.types.is_integer(type_)
        or pa.types.is_floating(type_)
        or pa.types.is_date32(type_)
        or (pa.types.is_timestamp(type_) and type_.tz is not None)
        or pa.types.is_string(type_)
    )


def write_files(root: str, parts: list[tuple[dict[str, str], pa.Table]]) -> list[dict[str, Any]]:
    """Write each part as a Parquet file under ``root`` and return their ``add`` actions."""
    actions = []
    for values, part in parts:
        folder = "/".join(f"{name}={value}" for name, value in values.items())
        name = f"part-00000-{uuid.uuid4()}-c000.snappy.parquet"
        relative = f"{folder}/{name}" if folder else name
        path = os.path.join(root, relative)
        if folder:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        pq.write_table(part, path, compression="snappy")
        actions.append(
            {
                "add": {
                    "path": relative,
                    "partitionValues": values,
                    "size": os.path.getsize(path),
                    "modificationTime": int(time.time() * 1000),
                    "dataChange": True,
                    "stats": file_stats(part),
                }
            }
        )
    return actions


def commit_entry(
    root: str,
    version: int,
    actions: list[dict[str, Any]],
    transactions: dict[str, int],
    partitions: list[str],
) -> bool:
    """Create the log entry ``version`` atomically; False when it exists (another writer)."""
    now = int(time.time() * 1000)
    lines = [
        {
            "commitInfo": {
                "timestamp": now,
                "operation": "WRITE",
                "operationParameters": {"mode": "Append", "partitionBy": json.dumps(partitions)},
                "isBlindAppend": True,
                "clientVersion": "sluice",
            }
        },
        *actions,
        *(
            {"txn": {"appId": app_id, "version": epoch, "lastUpdated": now}}
            for app_id, epoch in sorted(transactions.items())
        ),
    ]
    log = os.path.join(root, DELTA_LOG)
    temporary = os.path.join(log, f"_commit_{uuid.uuid4()}.json.tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write("\n".join(json.dumps(line, separators=(",", ":")) for line in lines) + "\n")
    try:
        os.link(temporary, os.path.join(log, f"{version:020d}.json"))
    except FileExistsError:
        return False
    finally:
        os.unlink(temporary)
    return True
