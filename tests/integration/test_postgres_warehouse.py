"""WarehouseSink and QueryEngine against a real PostgreSQL (127.0.0.1:5432, database test)."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest

from sluice.config.models import SinkConfig
from sluice.core.errors import TransientSinkError
from sluice.core.settings import Settings
from sluice.sinks.base import SinkContext
from sluice.sinks.warehouse import MARKER_TABLE, WarehouseSink
from sluice.storage.query import QueryEngine
from tests.conftest import require_service
from tests.postgres import ADMIN_URL, postgres_up

pytestmark = pytest.mark.postgres
psycopg = pytest.importorskip("psycopg")
BASE_URL = ADMIN_URL
T0 = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
def schema() -> Iterator[str]:
    """A fresh schema for one test, dropped afterwards."""
    require_service(postgres_up(), "PostgreSQL at 127.0.0.1:5432")
    name = f"sluice_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(BASE_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(BASE_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{name}" CASCADE')


def events(start: int, n: int) -> pa.Table:
    """Deterministic rows with strings that need CSV quoting, nulls and empty strings."""
    ids = list(range(start, start + n))
    notes = ['comma, "quote"', "", None, "line\nbreak", "ünïcode"]
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "ts": pa.array([T0 + timedelta(seconds=i) for i in ids], pa.timestamp("us", tz="UTC")),
            "temperature": [20.0 + i / 4 for i in ids],
            "ok": [i % 2 == 0 for i in ids],
            "note": [notes[i % len(notes)] for i in ids],
            "__origin": [f"f:{i}" for i in ids],
        }
    )


def sink_for(schema: str, pipeline: str = "tele", url: str = BASE_URL) -> WarehouseSink:
    config = SinkConfig.model_validate(
        {"type": "warehouse", "table": "telemetry", "url": url, "schema": schema}
    )
    return WarehouseSink(config, SinkContext(pipeline, Settings(), "ts"))


def fetch(schema: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(BASE_URL) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        return conn.execute(sql).fetchall()


def test_copy_load_is_exact_and_idempotent(schema: str) -> None:
    sink = sink_for(schema)
    try:
        assert sink.write(events(0, 10), 3) is True
        assert sink.write(events(0, 10), 3) is False
        assert sink.write(events(100, 10), 2) is False
        assert sink.write(events(10, 5), 4) is True
    finally:
        sink.close()
    got = fetch(schema, "SELECT id, ts, temperature, ok, note FROM telemetry ORDER BY id")
    expected = events(0, 15).drop_columns(["__origin"]).to_pylist()
    assert [
        dict(zip(["id", "ts", "temperature", "ok", "note"], row, strict=True)) for row in got
    ] == expected
    assert fetch(schema, f"SELECT epoch FROM {MARKER_TABLE} ORDER BY epoch") == [(3,), (4,)]


def test_new_sink_skips_replayed_epoch(schema: str) -> None:
    first, second = sink_for(schema), sink_for(schema)
    try:
        assert first.write(events(0, 3), 1) is True
        assert second.write(events(0, 3), 1) is False
        assert sink_for(schema, pipeline="other").write(events(3, 3), 1) is True
    finally:
        first.close()
        second.close()
    assert fetch(schema, "SELECT count(*) FROM telemetry") == [(6,)]


def test_schema_evolution_adds_columns(schema: str) -> None:
    sink = sink_for(schema)
    try:
        sink.write(events(0, 2), 1)
        scored = events(2, 2).append_column("score", pa.array([0.25, 0.75]))
        scored = scored.append_column("tags", pa.array([["a"], ["b", "c"]]))
        sink.write(scored, 2)
    finally:
        sink.close()
    got = fetch(schema, "SELECT id, score, tags FROM telemetry ORDER BY id")
    assert got == [(0, None, None), (1, None, None), (2, 0.25, ["a"]), (3, 0.75, ["b", "c"])]
    types = dict(
        fetch(
            schema,
            "SELECT column_name, data_type FROM information_schema.columns "
            f"WHERE table_schema = '{schema}' AND table_name = 'telemetry'",
        )
    )
    assert types["ts"] == "timestamp with time zone" and types["tags"] == "jsonb"


def test_connection_refused_is_transient_and_secret_free(schema: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once the socket is closed
    sink = sink_for(schema, url=f"postgresql://postgres:hunter2@127.0.0.1:{port}/test")
    with pytest.raises(TransientSinkError) as info:
        sink.write(events(0, 1), 1)
    assert "hunter2" not in str(info.value) and "***" in str(info.value)


def test_query_engine_reads_postgres_tables(schema: str, tmp_path: Any) -> None:
    sink = sink_for(schema)
    try:
        sink.write(events(0, 4), 1)
    finally:
        sink.close()
    url = f"{BASE_URL}?options=-csearch_path%3D{schema}"
    engine = QueryEngine(Settings(home=tmp_path / "home", warehouse_url=url))
    tables = {info.name: info for info in engine.tables()}
    assert set(tables) == {"telemetry"} and tables["telemetry"].kind == "warehouse"
    got = engine.query("SELECT count(*) AS n, sum(temperature) AS t FROM telemetry")
    assert got.to_pydict() == {"n": [4], "t": [81.5]}


def test_query_streams_postgres_rows_and_stops_at_the_limit(
    schema: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sluice.storage import query as query_module

    with psycopg.connect(BASE_URL, autocommit=True) as conn:
        conn.execute(
            f'CREATE TABLE "{schema}".big AS SELECT g::bigint AS id, g * 0.5 AS half, '
            "(g % 2 = 0) AS even, 'row ' || g AS label FROM generate_series(1, 300000) g"
        )
    read: list[int] = []
    batch = query_module.PgTable._batch
    monkeypatch.setattr(
        query_module.PgTable,
        "_batch",
        lambda self, rows: read.append(len(rows)) or batch(self, rows),
    )
    url = f"{BASE_URL}?options=-csearch_path%3D{schema}"
    engine = QueryEngine(Settings(home=tmp_path / "home", warehouse_url=url))
    first = engine.query("SELECT id, half, even, label FROM big", limit=3)
    assert first.num_rows == 3 and first.schema.field("id").type == pa.int64()
    assert first.schema.field("even").type == pa.bool_()
    assert sum(read) <= 65_536  # one batch from the cursor, not the table
    read.clear()
    total = engine.query("SELECT count(*) AS n, sum(half) AS s FROM big")
    assert total.to_pydict() == {"n": [300_000], "s": [300_000 * 300_001 / 4]}
    assert sum(read) == 300_000 and max(read) <= 65_536  # streamed in batches
