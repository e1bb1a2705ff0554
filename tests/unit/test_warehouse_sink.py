"""WarehouseSink over a real DuckDB file: idempotency marker, schema evolution, locks."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from sluice.config.models import SinkConfig
from sluice.core.errors import ConfigError, SinkError, TransientSinkError
from sluice.core.settings import Settings
from sluice.sinks.base import SinkContext, create_sink
from sluice.sinks.postgres import csv_ready, pg_type
from sluice.sinks.warehouse import MARKER_TABLE, WarehouseSink, describe_backend, redact_url

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def events(start: int, n: int) -> pa.Table:
    """Deterministic rows ``start .. start+n-1``."""
    ids = list(range(start, start + n))
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "device_id": [f"d{i % 3}" for i in ids],
            "ts": pa.array([T0 + timedelta(seconds=i) for i in ids], pa.timestamp("us", tz="UTC")),
            "temperature": [20.0 + i / 10 for i in ids],
            "__origin": [f"f:{i}" for i in ids],
        }
    )


def warehouse_sink(settings: Settings, pipeline: str = "tele", **options: Any) -> WarehouseSink:
    config = SinkConfig.model_validate({"type": "warehouse", "table": "telemetry", **options})
    return WarehouseSink(config, SinkContext(pipeline, settings, "ts"))


def rows(settings: Settings, sql: str) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(settings.warehouse_url), read_only=True) as con:
        return con.execute(sql).fetchall()


def test_epoch_written_once_with_marker(settings: Settings) -> None:
    sink = warehouse_sink(settings)
    assert sink.write(events(0, 5), 3) is True
    assert sink.write(events(0, 5), 3) is False
    assert sink.write(events(50, 5), 1) is False
    assert sink.write(events(5, 5), 4) is True
    sink.close()
    assert rows(settings, "SELECT count(*), count(DISTINCT id) FROM telemetry") == [(10, 10)]
    assert rows(
        settings, f"SELECT pipeline, sink_table, epoch FROM {MARKER_TABLE} ORDER BY epoch"
    ) == [("tele", "telemetry", 3), ("tele", "telemetry", 4)]
    columns = [r[0] for r in rows(settings, "DESCRIBE telemetry")]
    assert columns == ["id", "device_id", "ts", "temperature"]


def test_replay_by_a_new_sink_is_skipped_and_pipelines_are_separate(settings: Settings) -> None:
    warehouse_sink(settings).write(events(0, 3), 9)
    assert warehouse_sink(settings).write(events(0, 3), 9) is False
    assert warehouse_sink(settings, pipeline="other").write(events(3, 3), 9) is True
    assert rows(settings, "SELECT count(*) FROM telemetry") == [(6,)]


def test_file_is_released_between_writes(settings: Settings) -> None:
    sink = warehouse_sink(settings)
    sink.write(events(0, 2), 1)
    with duckdb.connect(str(settings.warehouse_url)) as writer:  # read-write: needs the lock
        assert writer.execute("SELECT count(*) FROM telemetry").fetchall() == [(2,)]
    sink.write(events(2, 2), 2)
    assert rows(settings, "SELECT count(*) FROM telemetry") == [(4,)]


def test_keep_open_mode(settings: Settings) -> None:
    sink = warehouse_sink(settings, keep_open=True)
    assert sink.write(events(0, 2), 1) is True
    assert sink.write(events(0, 2), 1) is False
    assert sink.write(events(2, 2), 2) is True
    sink.close()
    assert rows(settings, "SELECT count(*) FROM telemetry") == [(4,)]


def test_schema_evolution_adds_columns(settings: Settings) -> None:
    sink = warehouse_sink(settings)
    sink.write(events(0, 2), 1)
    sink.write(events(2, 2).append_column("iforest_score", pa.array([0.5, 0.7])), 2)
    sink.write(events(4, 1).select(["id", "ts"]), 3)
    got = rows(settings, "SELECT id, temperature, iforest_score FROM telemetry ORDER BY id")
    assert got == [
        (0, 20.0, None),
        (1, 20.1, None),
        (2, 20.2, 0.5),
        (3, 20.3, 0.7),
        (4, None, None),
    ]


def test_unconvertible_value_is_a_permanent_error_and_rolls_back(settings: Settings) -> None:
    sink = warehouse_sink(settings)
    sink.write(pa.table({"id": [1]}), 1)
    with pytest.raises(SinkError) as info:
        sink.write(pa.table({"id": ["not a number"]}), 2)
    assert not isinstance(info.value, TransientSinkError)
    assert rows(settings, f"SELECT max(epoch) FROM {MARKER_TABLE}") == [(1,)]
    assert sink.write(pa.table({"id": [2]}), 2) is True


def test_empty_batch_is_a_noop(settings: Settings) -> None:
    assert warehouse_sink(settings).write(events(0, 0), 1) is True
    assert not Path(str(settings.warehouse_url)).exists()


def test_url_option_and_create_sink(settings: Settings, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "wh.duckdb"
    config = SinkConfig.model_validate({"type": "warehouse", "table": "t", "url": str(target)})
    sink = create_sink(config, SinkContext("p", settings))
    assert isinstance(sink, WarehouseSink)
    sink.write(pa.table({"a": [1]}), 1)
    with duckdb.connect(str(target), read_only=True) as con:
        assert con.execute("SELECT a FROM t").fetchall() == [(1,)]
    with pytest.raises(ConfigError, match="table"):
        WarehouseSink(SinkConfig(type="warehouse"), SinkContext("p", settings))


@pytest.fixture
def locked_warehouse(settings: Settings) -> Iterator[Path]:
    """The warehouse file held open read-write by another process."""
    path = Path(str(settings.warehouse_url))
    path.parent.mkdir(parents=True, exist_ok=True)
    duckdb.connect(str(path)).close()
    code = (
        "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('ready', flush=True); "
        "sys.stdin.read()"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        yield path
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=10)


def test_locked_file_is_a_transient_error(settings: Settings, locked_warehouse: Path) -> None:
    sink = warehouse_sink(settings, lock_wait=0.2)
    with pytest.raises(TransientSinkError, match="locked"):
        sink.write(events(0, 1), 1)


def test_pg_types_and_helpers() -> None:
    assert pg_type(pa.int64()) == "BIGINT"
    assert pg_type(pa.timestamp("us", tz="UTC")) == "TIMESTAMPTZ"
    assert pg_type(pa.timestamp("ms")) == "TIMESTAMP"
    assert pg_type(pa.list_(pa.int32())) == "JSONB"
    assert pg_type(pa.list_(pa.int32()), redshift=True) == "SUPER"
    assert pg_type(pa.string(), redshift=True) == "VARCHAR(65535)"
    assert pg_type(pa.dictionary(pa.int8(), pa.string())) == "TEXT"
    assert pg_type(pa.decimal128(10, 2)) == "NUMERIC(10, 2)"
    assert redact_url("postgresql://u:s3cret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert "s3cret" not in str(describe_backend("redshift://u:s3cret@h:5439/db"))
    assert describe_backend("/x/w.duckdb") == {"kind": "duckdb", "path": "/x/w.duckdb"}
    ready = csv_ready(pa.table({"l": [[1, 2], None], "b": [b"\x01\xff", b""], "s": ["a", "b"]}))
    assert ready.column("l").to_pylist() == ["[1,2]", None]
    assert ready.column("b").to_pylist() == ["\\x01FF", "\\x"]
    assert ready.column("s").to_pylist() == ["a", "b"]
