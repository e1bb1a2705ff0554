"""Avro schemas as Arrow schemas, and Avro datums read into tables of them."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import fastavro
import orjson
import pyarrow as pa
import pytest

from sluice.sources.avro_arrow import avro_shape, datum_reader, records_table
from sluice.sources.kafka_formats import AvroPayloads, redact

LOC = {"type": "record", "name": "Loc", "fields": [{"name": "lat", "type": "double"}]}
EVERYTHING = {
    "type": "record",
    "name": "Event",
    "namespace": "t",
    "fields": [
        {"name": "n", "type": "int"},
        {"name": "big", "type": "long"},
        {"name": "f", "type": "float"},
        {"name": "flag", "type": "boolean"},
        {"name": "blob", "type": "bytes"},
        {"name": "opt", "type": ["null", "string"]},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "local", "type": {"type": "long", "logicalType": "local-timestamp-millis"}},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {
            "name": "price",
            "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2},
        },
        {"name": "id", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["A", "B"]}},
        {"name": "hash", "type": {"type": "fixed", "name": "H", "size": 4}},
        {"name": "loc", "type": LOC},
        {"name": "again", "type": "t.Loc"},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "counts", "type": {"type": "map", "values": "long"}},
        {"name": "number", "type": ["int", "double"]},
        {"name": "choice", "type": ["null", "string", "t.Loc"]},
    ],
}
RECORD = {
    "n": 1,
    "big": 2**40,
    "f": 0.5,
    "flag": True,
    "blob": b"\x00\x01",
    "opt": None,
    "at": datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC),
    "local": datetime(2024, 5, 1, 14, 0),
    "day": date(2024, 5, 1),
    "price": Decimal("12.34"),
    "id": "0b7d0a3c-60a2-4d8e-9f45-111122223333",
    "kind": "B",
    "hash": b"abcd",
    "loc": {"lat": 1.5},
    "again": {"lat": -2.0},
    "tags": ["x", "y"],
    "counts": {"a": 3},
    "number": 4,
    "choice": {"lat": 9.0},
}


def datum(schema: Any, record: Any) -> bytes:
    """``record`` as a raw Avro datum of ``schema``."""
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), record)
    return out.getvalue()


def test_every_avro_type_maps_to_an_arrow_type() -> None:
    shape = avro_shape(EVERYTHING)
    types = {f.name: f.type for f in shape.arrow}
    assert types == {
        "n": pa.int32(),
        "big": pa.int64(),
        "f": pa.float32(),
        "flag": pa.bool_(),
        "blob": pa.binary(),
        "opt": pa.string(),
        "at": pa.timestamp("us", tz="UTC"),
        "local": pa.timestamp("ms"),
        "day": pa.date32(),
        "price": pa.decimal128(9, 2),
        "id": pa.string(),
        "kind": pa.string(),
        "hash": pa.binary(4),
        "loc": pa.struct([pa.field("lat", pa.float64())]),
        "again": pa.struct([pa.field("lat", pa.float64())]),
        "tags": pa.list_(pa.string()),
        "counts": pa.map_(pa.string(), pa.int64()),
        "number": pa.float64(),
        "choice": pa.string(),
    }
    assert shape.as_json == ("choice",)
    assert not shape.wrapped


def test_records_round_trip_into_the_arrow_schema() -> None:
    shape = avro_shape(EVERYTHING)
    read = datum_reader(shape)
    table = records_table([read(datum(EVERYTHING, RECORD))], [None], shape.arrow)
    row = table.to_pylist()[0]
    assert row["at"] == RECORD["at"]
    assert row["price"] == Decimal("12.34")
    assert row["id"] == RECORD["id"]
    assert row["counts"] == [("a", 3)]
    assert row["number"] == 4.0
    assert orjson.loads(row["choice"]) == {"lat": 9.0}
    assert {k: row[k] for k in ("n", "big", "blob", "hash", "loc", "tags", "kind")} == {
        k: RECORD[k] for k in ("n", "big", "blob", "hash", "loc", "tags", "kind")
    }


def test_a_schema_that_is_not_a_record_is_one_value_column() -> None:
    shape = avro_shape({"type": "array", "items": "long"})
    assert shape.wrapped and shape.arrow.names == ["value"]
    raw, columns = AvroPayloads(shape, None).decode([datum(shape.parsed, [1, 2]), b"\x05"])
    assert columns["value"].to_pylist() == [[1, 2], None]
    assert raw[0] is None and raw[1] == b"base64:BQ=="
    assert columns["__error"].to_pylist()[1].startswith("not a valid Avro record")


def test_recursive_types_become_json_text() -> None:
    node = {
        "type": "record",
        "name": "Node",
        "fields": [{"name": "v", "type": "int"}, {"name": "next", "type": ["null", "Node"]}],
    }
    shape = avro_shape(node)
    assert shape.as_json == ("next",)
    record = {"v": 1, "next": {"v": 2, "next": None}}
    read = datum_reader(shape)
    table = records_table([read(datum(node, record))], [None], shape.arrow)
    assert orjson.loads(table["next"][0].as_py()) == {"v": 2, "next": None}


@pytest.mark.parametrize("name", ["_raw", "__origin", "_key"])
def test_reserved_field_names_are_refused(name: str) -> None:
    schema = {"type": "record", "name": "R", "fields": [{"name": name, "type": "int"}]}
    with pytest.raises(ValueError, match="clashes with a column"):
        avro_shape(schema, ["_raw", "_key"])


def test_redact_drops_credentials() -> None:
    assert redact("https://u:secret@reg.example:8081/base") == "https://reg.example:8081/base"
