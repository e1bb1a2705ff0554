"""Kafka payload formats: the cost of Avro and JSON Schema next to plain JSON lines.

Measures, in this process and without a broker, what happens to one poll's message values:
the payload format step (``kafka_formats``), UTF-8 decoding and the decode stage to the
pipeline schema. Baselines in the same run: plain JSON lines (the default path) and a bare
fastavro loop (``schemaless_reader`` per message + ``Table.from_pylist``).

    python benchmarks/kafka_formats.py [--events 200000] [--batch 10000]
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable
from typing import Any

import fastavro
import orjson
import pyarrow as pa
from common import RESULTS, machine

from sluice.config.models import FieldSpec
from sluice.core.context import EpochContext
from sluice.sources.avro_arrow import avro_shape
from sluice.sources.decode import Decoder
from sluice.sources.kafka import decode_utf8
from sluice.sources.kafka_formats import AvroPayloads, JsonSchemaPayloads

AVRO = {
    "type": "record",
    "name": "Reading",
    "fields": [
        {"name": "device_id", "type": "string"},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "temperature", "type": ["null", "double"]},
        {"name": "pressure", "type": "double"},
        {"name": "status", "type": {"type": "enum", "name": "S", "symbols": ["ok", "warn"]}},
    ],
}
JSON_SCHEMA = {
    "type": "object",
    "properties": {
        "device_id": {"type": "string"},
        "ts": {"type": "integer"},
        "temperature": {"type": ["number", "null"], "minimum": -50, "maximum": 150},
        "pressure": {"type": "number"},
        "status": {"enum": ["ok", "warn"]},
    },
    "required": ["device_id", "ts"],
}
FIELDS = {
    "device_id": FieldSpec(type="string"),
    "ts": FieldSpec(type="timestamp"),
    "temperature": FieldSpec(type="double"),
    "pressure": FieldSpec(type="double"),
    "status": FieldSpec(type="string"),
}


def events(count: int) -> list[dict[str, Any]]:
    """``count`` telemetry readings (deterministic)."""
    return [
        {
            "device_id": f"dev-{i % 100}",
            "ts": 1_700_000_000_000 + i,
            "temperature": None if i % 50 == 0 else 20.0 + i % 17,
            "pressure": 1000.0 + i % 13,
            "status": "warn" if i % 9 == 0 else "ok",
        }
        for i in range(count)
    ]


def avro_values(records: list[dict[str, Any]]) -> list[bytes | None]:
    """Raw Avro datums of ``records``."""
    parsed = fastavro.parse_schema(AVRO)
    out: list[bytes | None] = []
    for record in records:
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, parsed, record)
        out.append(buffer.getvalue())
    return out


def timed(batches: list[list[bytes | None]], step: Callable[[list[bytes | None]], Any]) -> float:
    """Events per second of ``step`` over every batch (best of two passes)."""
    best = float("inf")
    for _ in range(2):
        started = time.perf_counter()
        for batch in batches:
            step(batch)
        best = min(best, time.perf_counter() - started)
    return sum(len(b) for b in batches) / best


def main() -> None:
    """Measure every path and write ``benchmarks/results/kafka_formats.md``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=10_000)
    args = parser.parse_args()
    records = events(args.events)
    json_values: list[bytes | None] = [orjson.dumps(r) for r in records]
    avro_all = avro_values(records)

    def split(values: list[bytes | None]) -> list[list[bytes | None]]:
        return [values[i : i + args.batch] for i in range(0, len(values), args.batch)]

    json_decoder, arrow_decoder = Decoder(FIELDS, "json"), Decoder(FIELDS, "arrow")
    schema_check = JsonSchemaPayloads(JSON_SCHEMA)
    shape = avro_shape(AVRO)
    avro_payloads = AvroPayloads(shape, None)
    parsed = fastavro.parse_schema(AVRO)
    reader = fastavro.schemaless_reader

    def plain_json(values: list[bytes | None]) -> None:
        raw, invalid = decode_utf8(values)
        table = pa.table({"_raw": raw, "__invalid_utf8": invalid})
        json_decoder.decode(table, EpochContext("b", 1))

    def schema_json(values: list[bytes | None]) -> None:
        values, extra = schema_check.decode(values)
        raw, invalid = decode_utf8(values)
        table = pa.table({**extra, "_raw": raw, "__invalid_utf8": invalid})
        json_decoder.decode(table, EpochContext("b", 1))

    def bare_fastavro(values: list[bytes | None]) -> None:
        rows = [reader(io.BytesIO(v), parsed, None) for v in values]  # type: ignore[arg-type]
        pa.Table.from_pylist(rows, schema=shape.arrow)

    def avro_step(values: list[bytes | None]) -> None:
        avro_payloads.decode(values)

    def sluice_avro(values: list[bytes | None]) -> None:
        values, columns = avro_payloads.decode(values)
        raw, invalid = decode_utf8(values)
        table = pa.table({**columns, "_raw": raw, "__invalid_utf8": invalid})
        arrow_decoder.decode(table, EpochContext("b", 1))

    rates = {
        "plain JSON lines -> schema": timed(split(json_values), plain_json),
        "JSON + json_schema -> schema": timed(split(json_values), schema_json),
        "bare fastavro loop + from_pylist": timed(split(avro_all), bare_fastavro),
        "Avro payload step only (kafka_formats)": timed(split(avro_all), avro_step),
        "Avro (schema file) -> schema": timed(split(avro_all), sluice_avro),
    }
    json_decoder.close()
    arrow_decoder.close()
    write_results(rates, args.events, args.batch)


def write_results(rates: dict[str, float], count: int, batch: int) -> None:
    """Print and store the table (ratios against plain JSON lines)."""
    base = rates["plain JSON lines -> schema"]
    lines = [
        "## Kafka payload formats (`benchmarks/kafka_formats.py`)",
        "",
        f"{count:,} telemetry events in polls of {batch:,}, in one process without a broker "
        f"(the payload step, UTF-8 and the decode stage to a 5-field schema); {machine()}.",
        "",
        "| path | events/s | vs plain JSON |",
        "|---|---:|---:|",
        *(f"| {name} | {rate:,.0f} | {rate / base:.2f}x |" for name, rate in rates.items()),
        "",
        "Avro and JSON Schema cost a Python call per message (fastavro's reader, fastjsonschema's"
        " compiled validator); the rest of each path is vectorised. The payload step alone"
        " compares with the bare fastavro loop; the full Avro path adds the decode stage"
        " (one DuckDB query per poll).",
    ]
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "kafka_formats.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
