"""Avro schemas as Arrow schemas, and Avro datums read into records that fit them.

Type mapping: primitives to their Arrow twins (``int`` int32, ``long`` int64, ``float``
float32, ``bytes`` binary); ``enum`` and ``uuid`` to string; ``fixed`` to fixed-size
binary; records to structs, arrays to lists, maps to ``map<string, _>``; ``date``,
``time-*`` and ``timestamp-*`` to Arrow temporals (UTC unless ``local-``); ``decimal`` to
decimal128/256. A union with ``null`` is the nullable other branch; a union of numbers is
the widest number; any other union (and a recursive type) makes its top-level field a
JSON text column.
"""

from __future__ import annotations

import base64
import decimal
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import orjson
import pyarrow as pa

from sluice.core.deps import require

PRIMITIVES = {
    "null": pa.null(),
    "boolean": pa.bool_(),
    "int": pa.int32(),
    "long": pa.int64(),
    "float": pa.float32(),
    "double": pa.float64(),
    "bytes": pa.binary(),
    "string": pa.string(),
}
LOGICAL = {
    ("int", "date"): pa.date32(),
    ("int", "time-millis"): pa.time32("ms"),
    ("long", "time-micros"): pa.time64("us"),
    ("long", "timestamp-millis"): pa.timestamp("ms", tz="UTC"),
    ("long", "timestamp-micros"): pa.timestamp("us", tz="UTC"),
    ("long", "timestamp-nanos"): pa.timestamp("ns", tz="UTC"),
    ("long", "local-timestamp-millis"): pa.timestamp("ms"),
    ("long", "local-timestamp-micros"): pa.timestamp("us"),
    ("long", "local-timestamp-nanos"): pa.timestamp("ns"),
}
NUMBER_ORDER = ("int", "long", "float", "double")
VALUE_COLUMN = "value"  # the one column of a schema that is not a record


class AvroDataError(ValueError):
    """A message is not a datum of the schema it should be read with."""


class _UntypedError(Exception):
    """The Avro type has no Arrow equivalent here (it becomes JSON text)."""


@dataclass(frozen=True)
class AvroShape:
    """A parsed Avro schema and the Arrow schema of the records read with it."""

    parsed: Any
    arrow: pa.Schema
    wrapped: bool  # not a record: each datum becomes ``{"value": datum}``
    as_json: tuple[str, ...]  # columns holding JSON text


def fastavro_module() -> Any:
    """The ``fastavro`` module (MissingDependencyError naming the ``kafka`` extra)."""
    return require("fastavro", "kafka", "Avro payloads")


def avro_shape(schema: Any, reserved: Iterable[str] = ()) -> AvroShape:
    """Parse an Avro schema (JSON value) and derive its Arrow schema; ValueError if unusable."""
    fastavro = fastavro_module()
    try:
        parsed = fastavro.parse_schema(_plain_uuids(schema))
    except Exception as exc:  # fastavro raises several kinds for bad schemas
        raise ValueError(f"not a valid Avro schema: {exc}") from None
    named = parsed.get("__named_schemas", {}) if isinstance(parsed, dict) else {}
    is_record = isinstance(parsed, dict) and parsed.get("type") in ("record", "error")
    fields = (
        [(f["name"], f["type"]) for f in parsed["fields"]]
        if is_record
        else [(VALUE_COLUMN, parsed)]
    )
    blocked = set(reserved)
    arrow_fields, as_json = [], []
    for name, avro_type in fields:
        if name in blocked or name.startswith("__"):
            raise ValueError(f"Avro field {name!r} clashes with a column Sluice adds; rename it")
        try:
            arrow_fields.append(pa.field(name, _arrow_type(avro_type, named, frozenset())))
        except _UntypedError:
            arrow_fields.append(pa.field(name, pa.string()))
            as_json.append(name)
    return AvroShape(parsed, pa.schema(arrow_fields), not is_record, tuple(as_json))


def _plain_uuids(schema: Any) -> Any:
    """``schema`` without ``uuid`` logical types (read as plain strings, not UUID objects)."""
    if isinstance(schema, list):
        return [_plain_uuids(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    return {
        k: _plain_uuids(v)
        for k, v in schema.items()
        if not (k == "logicalType" and v == "uuid" and schema.get("type") == "string")
    }


def _arrow_type(schema: Any, named: dict[str, Any], seen: frozenset[str]) -> pa.DataType:
    """The Arrow type of an Avro (parsed) type; _UntypedError when there is none."""
    if isinstance(schema, str):
        if schema in PRIMITIVES:
            return PRIMITIVES[schema]
        if schema in seen or schema not in named:
            raise _UntypedError
        return _arrow_type(named[schema], named, seen)
    if isinstance(schema, list):
        return _union_type(schema, named, seen)
    kind = schema["type"]
    if not isinstance(kind, str) or (kind in PRIMITIVES and "logicalType" not in schema):
        return _arrow_type(kind, named, seen)
    logical = schema.get("logicalType")
    if logical == "decimal" and kind in ("bytes", "fixed"):
        precision, scale = int(schema.get("precision", 38)), int(schema.get("scale", 0))
        return (pa.decimal128 if precision <= 38 else pa.decimal256)(precision, scale)
    if (kind, logical) in LOGICAL:
        return LOGICAL[(kind, logical)]
    if kind in ("record", "error"):
        inner = seen | {schema["name"]}
        return pa.struct(
            [pa.field(f["name"], _arrow_type(f["type"], named, inner)) for f in schema["fields"]]
        )
    if kind == "enum":
        return pa.string()
    if kind == "array":
        return pa.list_(_arrow_type(schema["items"], named, seen))
    if kind == "map":
        return pa.map_(pa.string(), _arrow_type(schema["values"], named, seen))
    if kind == "fixed":
        return pa.binary(int(schema["size"]))
    return _arrow_type(kind, named, seen)  # a primitive with an unknown logical type


def _union_type(branches: list[Any], named: dict[str, Any], seen: frozenset[str]) -> pa.DataType:
    """Nullable unions and unions of numbers; others are _UntypedError."""
    others = [b for b in branches if b != "null"]
    if not others:
        return pa.null()
    if len(others) == 1:
        return _arrow_type(others[0], named, seen)
    if all(isinstance(b, str) and b in NUMBER_ORDER for b in others):
        if {"float", "double"} & set(others) and {"int", "long"} & set(others):
            return pa.float64()
        return PRIMITIVES[max(others, key=NUMBER_ORDER.index)]
    raise _UntypedError


# -- reading -----------------------------------------------------------------------------
Reader = Callable[[bytes | None], Any]


def datum_reader(writer: AvroShape, reader: AvroShape | None = None, start: int = 0) -> Reader:
    """A function reading one message (its datum at byte ``start``) into a record dict."""
    read = fastavro_module().schemaless_reader
    shape = reader or writer
    writer_schema, reader_schema = writer.parsed, reader.parsed if reader else None
    wrapped, as_json = shape.wrapped, shape.as_json

    def read_one(payload: bytes | None) -> Any:
        if payload is None:
            raise AvroDataError("null message value (a tombstone), not an Avro record")
        buffer = BytesIO(payload)
        if start:
            buffer.seek(start)
        try:
            record = read(buffer, writer_schema, reader_schema)
        except EOFError:
            raise AvroDataError("not a valid Avro record (truncated)") from None
        except Exception as exc:  # corrupt data raises many kinds
            detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise AvroDataError(f"not a valid Avro record ({detail})") from None
        left = len(payload) - buffer.tell()
        if left:
            raise AvroDataError(f"{left} bytes left after the Avro record (wrong schema?)")
        if wrapped:
            record = {VALUE_COLUMN: record}
        for name in as_json:
            record[name] = to_json_text(record.get(name))
        return record

    return read_one


def to_json_text(value: Any) -> str | None:
    """``value`` as JSON text (bytes as base64, decimals as strings)."""
    if value is None:
        return None
    return orjson.dumps(value, default=_json_default).decode()


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, decimal.Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def records_table(records: list[Any], errors: list[str | None], schema: pa.Schema) -> pa.Table:
    """Records (None: a failed row, all null) as a table of ``schema``.

    A record Arrow refuses gets an error in ``errors`` and becomes a null row.
    """
    rows = [r if r is not None else {} for r in records] if any(errors) else records
    try:
        return pa.Table.from_pylist(rows, schema=schema)
    except (pa.ArrowException, OverflowError, TypeError, ValueError):
        pass
    for i, row in enumerate(rows):  # rare: find the rows that do not convert
        try:
            pa.Table.from_pylist([row], schema=schema)
        except (pa.ArrowException, OverflowError, TypeError, ValueError) as exc:
            errors[i] = f"Avro record does not fit its Arrow schema: {exc}"
            rows[i] = {}
    return pa.Table.from_pylist(rows, schema=schema)
