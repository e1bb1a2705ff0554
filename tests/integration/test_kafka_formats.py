"""Avro and JSON-Schema payloads on the Kafka source, against a real tansu broker.

The schema registry is a tiny stdlib HTTP server on 127.0.0.1 that answers
``GET /schemas/ids/{id}`` like a Confluent registry (no real one is installable here).
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import fastavro
import orjson
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from sluice.config.loader import load_pipeline
from sluice.config.models import FieldSpec, SourceConfig
from sluice.connectors.kafka import produce_records
from sluice.core.context import EpochContext
from sluice.core.errors import ConfigError, SourceError
from sluice.runners.create import run
from sluice.sources.base import SourceBatch, SourceContext
from sluice.sources.decode import Decoder
from sluice.sources.kafka import KafkaSource
from tests.kafka_broker import free_port, kafka_broker_fixture, new_topic  # noqa: F401

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]

READING = {
    "type": "record",
    "name": "Reading",
    "namespace": "sluice.test",
    "fields": [
        {"name": "device_id", "type": "string"},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "temperature", "type": ["null", "double"], "default": None},
        {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["OK", "FAIL"]}},
    ],
}
V1 = {
    "type": "record",
    "name": "Reading",
    "fields": [
        {"name": "device_id", "type": "string"},
        {"name": "temperature", "type": "double"},
    ],
}
V2 = {
    "type": "record",
    "name": "Reading",
    "fields": [
        *V1["fields"],
        {"name": "site", "type": ["null", "string"], "default": None},
    ],
}
T0_MS = 1_700_000_000_000
FIELDS = {
    "device_id": FieldSpec(type="string", required=True),
    "ts": FieldSpec(type="timestamp"),
    "temperature": FieldSpec(type="double"),
    "status": FieldSpec(type="string"),
}


def avro(schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    """``record`` as a raw Avro datum of ``schema``."""
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), record)
    return out.getvalue()


def wire(schema_id: int, datum: bytes) -> bytes:
    """A datum in the Confluent wire format."""
    return b"\x00" + schema_id.to_bytes(4, "big") + datum


def reading(i: int) -> dict[str, Any]:
    """The ``i``-th test reading (deterministic)."""
    return {
        "device_id": f"d{i % 5}",
        "ts": T0_MS + i * 1000,
        "temperature": None if i % 10 == 9 else 20.0 + i % 7,
        "status": "FAIL" if i % 4 == 0 else "OK",
    }


def make_source(bootstrap: str, topic: str, **options: Any) -> KafkaSource:
    """A Kafka source for ``topic`` in its own consumer group."""
    config = SourceConfig(type="kafka", topic=topic, bootstrap_servers=bootstrap, **options)
    context = SourceContext(pipeline="p", home="/nonexistent", group=f"g-{uuid.uuid4().hex[:8]}")
    return KafkaSource(config, context)


def read_all(source: KafkaSource, rows: int, max_rows: int = 1000) -> list[SourceBatch]:
    """Open ``source`` and poll until ``rows`` rows arrived (60 s at most), then close it."""
    batches: list[SourceBatch] = []
    deadline = time.monotonic() + 60
    source.open(None)
    try:
        while sum(b.data.num_rows for b in batches) < rows and time.monotonic() < deadline:
            batch = source.poll(max_rows, 0.5)
            if batch is not None:
                batches.append(batch)
    finally:
        source.close()
    return batches


def table_of(batches: list[SourceBatch]) -> pa.Table:
    """All batches as one table (schemas unified like the runner does)."""
    return pa.concat_tables([b.data for b in batches], promote_options="permissive")


def decode(table: pa.Table, fields: dict[str, FieldSpec], raw_format: str) -> tuple[pa.Table, Any]:
    """Run the decode stage: the good rows and the dead letters (a table, or None)."""
    decoder = Decoder(fields, raw_format)
    ctx = EpochContext("p", 1)
    try:
        good = decoder.decode(table, ctx)
    finally:
        decoder.close()
    return good, pa.concat_tables(ctx.dead_letters) if ctx.dead_letters else None


# -- a schema registry ---------------------------------------------------------------------
class Registry:
    """A Confluent-compatible registry serving ``schemas`` by id; ``hits`` logs the ids asked."""

    def __init__(self, schemas: dict[int, dict[str, Any]], auth: tuple[str, str] | None) -> None:
        self.schemas, self.hits = schemas, []
        expected = "Basic " + base64.b64encode(":".join(auth).encode()).decode() if auth else None
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                prefix = "/schemas/ids/"
                if expected and self.headers.get("Authorization") != expected:
                    return self._send(401, {"error_code": 401, "message": "Unauthorized"})
                if not self.path.startswith(prefix) or not self.path[len(prefix) :].isdigit():
                    return self._send(404, {"error_code": 404, "message": "HTTP 404 Not Found"})
                schema_id = int(self.path[len(prefix) :])
                registry.hits.append(schema_id)
                if schema_id not in registry.schemas:
                    return self._send(40403, {"error_code": 40403, "message": "Schema not found"})
                return self._send(200, {"schema": json.dumps(registry.schemas[schema_id])})

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(404 if code == 40403 else code)
                self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Shut the server down."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def registry() -> Iterator[Registry]:
    """A registry holding V1 as id 1 and V2 as id 7, behind basic auth."""
    server = Registry({1: V1, 7: V2}, auth=("reader", "pa55"))
    try:
        yield server
    finally:
        server.stop()


# -- Avro with a schema file -----------------------------------------------------------------
def test_avro_with_a_schema_file_becomes_typed_columns(kafka_broker: str, tmp_path: Path) -> None:
    topic = new_topic(kafka_broker, partitions=2)
    good = [avro(READING, reading(i)) for i in range(300)]
    produce_records(kafka_broker, topic, [(v, f"d{i % 5}".encode()) for i, v in enumerate(good)])
    schema_file = tmp_path / "reading.avsc"
    schema_file.write_text(json.dumps(READING))
    source = make_source(
        kafka_broker, topic, format="avro", schema=str(schema_file), include=["key"]
    )
    batches = read_all(source, 300, max_rows=128)
    table = table_of(batches)
    assert {b.raw_format for b in batches} == {"arrow"}
    assert table.schema.field("ts").type == pa.timestamp("ms", tz="UTC")
    assert table.schema.field("temperature").type == pa.float64()
    assert table.schema.field("status").type == pa.string()
    assert table["__error"].null_count == table["_raw"].null_count == 300
    by_ts = table.sort_by("ts")
    assert by_ts["device_id"].to_pylist() == [f"d{i % 5}" for i in range(300)]
    assert by_ts["_key"].to_pylist() == by_ts["device_id"].to_pylist()
    assert by_ts["temperature"].to_pylist() == [reading(i)["temperature"] for i in range(300)]
    first = by_ts["ts"][0].as_py()
    assert first == datetime.fromtimestamp(T0_MS / 1000, UTC)

    rows, dead = decode(table, FIELDS, "arrow")
    assert dead is None
    assert rows.num_rows == 300
    assert rows.schema.field("ts").type == pa.timestamp("us", tz="UTC")


def test_avro_records_that_do_not_decode_are_dead_letters(kafka_broker: str) -> None:
    topic = new_topic(kafka_broker, partitions=1)
    datum = avro(READING, reading(1))
    payloads: list[tuple[bytes, bytes | None]] = [
        (avro(READING, reading(0)), None),
        (datum[:-3], None),  # truncated
        (datum + b"\x02\x04", None),  # trailing bytes: written with another schema
        (b'{"device_id": "d1"}', None),  # JSON, not Avro
        (avro(READING, reading(4)), None),
    ]
    produce_records(kafka_broker, topic, payloads)
    source = make_source(kafka_broker, topic, format="avro", schema=READING)
    table = table_of(read_all(source, len(payloads)))
    assert table.num_rows == len(payloads)

    rows, dead = decode(table, FIELDS, "arrow")
    assert rows["device_id"].to_pylist() == ["d0", "d4"]
    assert dead["origin"].to_pylist() == [f"{topic}/0@{i}" for i in (1, 2, 3)]
    reasons = dead["reason"].to_pylist()
    assert reasons[0] == "not a valid Avro record (truncated)"
    assert reasons[1] == "2 bytes left after the Avro record (wrong schema?)"
    assert reasons[2].startswith("not a valid Avro record")
    raws = [base64.b64decode(r.removeprefix("base64:")) for r in dead["raw"].to_pylist()]
    assert raws == [payloads[i][0] for i in (1, 2, 3)]


# -- Avro through a schema registry ---------------------------------------------------------
def test_avro_via_the_registry_wire_format(kafka_broker: str, registry: Registry) -> None:
    topic = new_topic(kafka_broker, partitions=1)
    v1 = [wire(1, avro(V1, {"device_id": f"a{i}", "temperature": float(i)})) for i in range(60)]
    v2 = [
        wire(7, avro(V2, {"device_id": f"b{i}", "temperature": 1.5, "site": "plant-2"}))
        for i in range(60)
    ]
    bad = [wire(99, b"\x02x"), avro(V1, {"device_id": "no-header", "temperature": 1.0})]
    produce_records(kafka_broker, topic, [(v, None) for v in v1 + v2 + bad])
    options = {"url": registry.url, "username": "reader", "password": "pa55"}
    source = make_source(kafka_broker, topic, format="avro", schema_registry=options)
    batches = read_all(source, 122, max_rows=50)
    assert len(batches) >= 3
    table = table_of(batches)
    assert table.num_rows == 122
    assert sorted(registry.hits) == [1, 7, 99]  # each id fetched once across the polls

    fields = {
        "device_id": FieldSpec(type="string", required=True),
        "temperature": FieldSpec(type="double"),
        "site": FieldSpec(type="string"),
    }
    rows, dead = decode(table, fields, "arrow")
    got = {r["device_id"]: (r["temperature"], r["site"]) for r in rows.to_pylist()}
    assert got == {
        **{f"a{i}": (float(i), None) for i in range(60)},
        **{f"b{i}": (1.5, "plant-2") for i in range(60)},
    }
    assert dead["reason"].to_pylist() == [
        "schema id 99 is not in the schema registry",
        "not in the schema registry wire format (byte 0 + 4-byte schema id)",
    ]
    assert dead["origin"].to_pylist() == [f"{topic}/0@120", f"{topic}/0@121"]


def test_registry_records_resolve_to_a_reader_schema(kafka_broker: str) -> None:
    topic = new_topic(kafka_broker, partitions=1)
    reader = {**V2, "fields": [*V1["fields"], {"name": "site", "type": "string", "default": "hq"}]}
    server = Registry({1: V1, 7: V2}, auth=None)
    try:
        produce_records(
            kafka_broker,
            topic,
            [
                (wire(1, avro(V1, {"device_id": "old", "temperature": 1.0})), None),
                (wire(7, avro(V2, {"device_id": "new", "temperature": 2.0, "site": "s"})), None),
            ],
        )
        source = make_source(
            kafka_broker, topic, format="avro", schema=reader, schema_registry={"url": server.url}
        )
        table = table_of(read_all(source, 2))
    finally:
        server.stop()
    assert table.schema.field("site").type == pa.string()
    assert table.select(["device_id", "site"]).to_pylist() == [
        {"device_id": "old", "site": "hq"},
        {"device_id": "new", "site": "s"},
    ]


def test_an_unreachable_registry_stops_the_source_without_leaking_secrets(
    kafka_broker: str,
) -> None:
    topic = new_topic(kafka_broker, partitions=1)
    produce_records(
        kafka_broker, topic, [(wire(1, avro(V1, {"device_id": "x", "temperature": 1.0})), None)]
    )
    url = f"http://user:s3cret@127.0.0.1:{free_port()}"
    source = make_source(kafka_broker, topic, format="avro", schema_registry={"url": url})
    source.open(None)
    try:
        with pytest.raises(SourceError) as info:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                source.poll(10, 0.5)
    finally:
        source.close()
    assert "unreachable" in str(info.value)
    assert "127.0.0.1" in str(info.value) and "s3cret" not in str(info.value)


def test_wrong_registry_credentials_are_a_source_error(
    kafka_broker: str, registry: Registry
) -> None:
    topic = new_topic(kafka_broker, partitions=1)
    produce_records(
        kafka_broker, topic, [(wire(1, avro(V1, {"device_id": "x", "temperature": 1.0})), None)]
    )
    options = {"url": registry.url, "username": "reader", "password": "wrong"}
    source = make_source(kafka_broker, topic, format="avro", schema_registry=options)
    with pytest.raises(SourceError, match="refused access \\(HTTP 401\\)") as info:
        read_all(source, 1)
    assert "wrong" not in str(info.value)


# -- JSON Schema ----------------------------------------------------------------------------
JSON_SCHEMA = {
    "type": "object",
    "properties": {
        "device_id": {"type": "string", "pattern": "^d[0-9]+$"},
        "temperature": {"type": "number", "minimum": -50, "maximum": 150},
    },
    "required": ["device_id"],
}


def test_json_schema_dead_letters_invalid_messages_with_the_reason(
    kafka_broker: str, tmp_path: Path
) -> None:
    topic = new_topic(kafka_broker, partitions=1)
    messages = [
        b'{"device_id": "d1", "temperature": 21.5}',
        b'{"temperature": 20}',
        b'{"device_id": "d2", "temperature": "hot"}',
        b'{"device_id": "d3", "temperature": 500}',
        b'{"device_id": "x9"}',
        b"not json",
        b'{"device_id": "d\xff"}',
        b'{"device_id": "d4"}',
    ]
    produce_records(kafka_broker, topic, [(m, None) for m in messages])
    schema_file = tmp_path / "reading.schema.json"
    schema_file.write_text(json.dumps(JSON_SCHEMA))
    source = make_source(kafka_broker, topic, format="json", json_schema=str(schema_file))
    batches = read_all(source, len(messages))
    assert {b.raw_format for b in batches} == {"json"}
    table = table_of(batches)

    fields = {"device_id": FieldSpec(type="string"), "temperature": FieldSpec(type="double")}
    rows, dead = decode(table, fields, "json")
    assert rows.to_pylist() == [
        {"device_id": "d1", "temperature": 21.5, "__origin": f"{topic}/0@0"},
        {"device_id": "d4", "temperature": None, "__origin": f"{topic}/0@7"},
    ]
    reasons = dict(zip(dead["origin"].to_pylist(), dead["reason"].to_pylist(), strict=True))
    prefix = "does not match the JSON schema: "
    for offset, words in [
        (1, "device_id"),
        (2, "temperature must be number"),
        (3, "temperature must be smaller than or equal to 150"),
        (4, "device_id must match pattern"),
    ]:
        reason = reasons[f"{topic}/0@{offset}"]
        assert reason.startswith(prefix) and words in reason, reason
    assert reasons[f"{topic}/0@5"] == "malformed JSON"
    assert reasons[f"{topic}/0@6"] == "invalid UTF-8"
    assert orjson.loads(dead["raw"][0].as_py()) == {"temperature": 20}


# -- end to end: a pipeline without a schema --------------------------------------------------
PIPELINE = """\
name: avroland
source:
  type: kafka
  topic: {topic}
  bootstrap_servers: "{bootstrap}"
  format: avro
  schema: {schema}
sinks:
  - {{type: lake, table: readings}}
"""


def test_a_pipeline_lands_avro_records_typed_and_dead_letters_the_rest(
    kafka_broker: str, tmp_path: Path, sluice_home: Path
) -> None:
    topic = new_topic(kafka_broker, partitions=2)
    records = [(avro(READING, reading(i)), None) for i in range(500)]
    produce_records(kafka_broker, topic, [*records, (b"\x01garbage", None)])
    schema_file = tmp_path / "reading.avsc"
    schema_file.write_text(json.dumps(READING))
    pipeline_file = tmp_path / "avroland.yaml"
    pipeline_file.write_text(
        PIPELINE.format(topic=topic, bootstrap=kafka_broker, schema=schema_file)
    )
    stats = run(load_pipeline(pipeline_file), until_idle=True, idle_timeout=2.0)
    assert (stats.events_in, stats.events_out, stats.dead_lettered) == (501, 500, 1)

    lake = DeltaTable(str(sluice_home / "lake" / "readings")).to_pyarrow_table()
    assert sorted(lake.column_names) == ["device_id", "status", "temperature", "ts"]
    assert pa.types.is_timestamp(lake.schema.field("ts").type)
    stamps = lake["ts"].cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64()).to_pylist()
    assert sorted(stamps) == [T0_MS + i * 1000 for i in range(500)]
    dead = DeltaTable(str(sluice_home / "lake" / "dead_letter")).to_pyarrow_table()
    assert dead["reason"].to_pylist()[0].startswith("not a valid Avro record")
    assert dead["raw"].to_pylist() == ["base64:" + base64.b64encode(b"\x01garbage").decode()]


# -- configuration errors -------------------------------------------------------------------
@pytest.mark.parametrize(
    "options, key",
    [
        ({"format": "avro"}, "source.schema"),
        ({"format": "avro", "schema": "/nonexistent/reading.avsc"}, "source.schema"),
        (
            {"format": "avro", "schema": {**V1, "fields": [{"name": "a", "type": "no.Such"}]}},
            "source.schema",
        ),
        (
            {"format": "avro", "schema": {**V1, "fields": [{"name": "_raw", "type": "string"}]}},
            "source.schema",
        ),
        (
            {"format": "avro", "schema_registry": {"url": "localhost:8081"}},
            "source.schema_registry.url",
        ),
        (
            {"format": "avro", "schema_registry": {"url": "http://r", "token": "x"}},
            "source.schema_registry.token",
        ),
        ({"format": "json", "schema": V1}, "source.schema"),
        ({"format": "json", "json_schema": "/nonexistent/s.json"}, "source.json_schema"),
        ({"format": "json", "json_schema": {"type": "no-such-type"}}, "source.json_schema"),
        ({"format": "csv", "columns": ["a"], "json_schema": {}}, "source.json_schema"),
        ({"format": "json", "schema_registry": {"url": "http://r"}}, "source.schema_registry"),
    ],
)
def test_bad_format_options_are_config_errors(options: dict[str, Any], key: str) -> None:
    config = SourceConfig(type="kafka", topic="t", **options)
    with pytest.raises(ConfigError) as info:
        KafkaSource(config, SourceContext(pipeline="p", home="/nonexistent"))
    assert info.value.key == key


def test_a_schema_file_that_is_not_json_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.avsc"
    path.write_text("{not json")
    config = SourceConfig(type="kafka", topic="t", format="avro", schema=str(path))
    with pytest.raises(ConfigError) as info:
        KafkaSource(config, SourceContext(pipeline="p", home="/nonexistent"))
    assert info.value.key == "source.schema"
    assert str(path) in str(info.value) and "not JSON" in str(info.value)
