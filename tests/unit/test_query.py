"""QueryEngine over real Delta tables and a real DuckDB warehouse: names, read-only, limits."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import duckdb
import pyarrow as pa
import pytest

from sluice.config.models import SinkConfig
from sluice.core.context import EpochContext
from sluice.core.errors import QueryError
from sluice.core.settings import Settings
from sluice.sinks.base import SinkContext
from sluice.sinks.dead_letter import dead_letter_sink
from sluice.sinks.lake import LakeSink
from sluice.sinks.warehouse import WarehouseSink
from sluice.storage.query import QueryEngine, TableInfo, check_read_only


def write(settings: Settings, kind: str, table: str, data: pa.Table, epoch: int = 1) -> None:
    config = SinkConfig.model_validate({"type": kind, "table": table})
    sink_class = LakeSink if kind == "lake" else WarehouseSink
    sink = sink_class(config, SinkContext("p", settings, "ts"))
    assert sink.write(data, epoch) is True
    sink.close()


@pytest.fixture
def stocked(settings: Settings) -> Settings:
    """A lake with ``telemetry`` and ``shared``, a warehouse with ``shared`` and ``totals``."""
    write(
        settings,
        "lake",
        "telemetry",
        pa.table({"device_id": ["a", "b", "a"], "v": [1.0, 2.0, 3.0]}),
    )
    write(settings, "lake", "shared", pa.table({"origin": ["lake"] * 2}))
    write(settings, "warehouse", "shared", pa.table({"origin": ["warehouse"]}))
    write(settings, "warehouse", "totals", pa.table({"device_id": ["a", "b"], "n": [2, 1]}))
    return settings


def test_lake_and_warehouse_tables_by_name(stocked: Settings) -> None:
    engine = QueryEngine(stocked)
    got = engine.query("SELECT device_id, sum(v) AS s FROM telemetry GROUP BY 1 ORDER BY 1")
    assert got.to_pydict() == {"device_id": ["a", "b"], "s": [4.0, 2.0]}
    joined = engine.query(
        "SELECT t.device_id, count(*) AS events, any_value(w.n) AS n "
        "FROM telemetry t JOIN totals w USING (device_id) GROUP BY 1 ORDER BY 1"
    )
    assert joined.to_pydict() == {"device_id": ["a", "b"], "events": [2, 1], "n": [2, 1]}


def test_warehouse_wins_and_lake_is_reachable_qualified(stocked: Settings) -> None:
    engine = QueryEngine(stocked)
    assert engine.query("SELECT DISTINCT origin FROM shared").column(0).to_pylist() == ["warehouse"]
    assert engine.query("SELECT count(*) FROM lake.shared").column(0).to_pylist() == [2]
    assert engine.query("SELECT count(*) FROM warehouse.shared").column(0).to_pylist() == [1]


def test_tables_lists_both_kinds(stocked: Settings) -> None:
    tables = {info.name: info for info in QueryEngine(stocked).tables()}
    assert set(tables) == {"telemetry", "shared", "totals"}
    assert tables["telemetry"] == TableInfo(
        "telemetry", "lake", 3, ["device_id", "v"], ["string", "double"]
    )
    assert tables["shared"].kind == "warehouse" and tables["shared"].rows == 1
    assert tables["totals"].columns == ["device_id", "n"]


def test_new_epochs_are_seen_by_a_long_lived_engine(stocked: Settings) -> None:
    engine = QueryEngine(stocked)
    assert engine.query("SELECT count(*) FROM telemetry").column(0).to_pylist() == [3]
    write(stocked, "lake", "telemetry", pa.table({"device_id": ["c"], "v": [9.0]}), epoch=2)
    write(stocked, "warehouse", "totals", pa.table({"device_id": ["c"], "n": [1]}), epoch=2)
    assert engine.query("SELECT count(*) FROM telemetry").column(0).to_pylist() == [4]
    assert engine.query("SELECT count(*) FROM totals").column(0).to_pylist() == [3]


def test_limit_and_statement_kinds(stocked: Settings) -> None:
    engine = QueryEngine(stocked)
    assert engine.query("SELECT * FROM range(1000000)", limit=7).num_rows == 7
    assert engine.query("SELECT * FROM telemetry", limit=0).num_rows == 0
    assert engine.query("DESCRIBE telemetry").column("column_name").to_pylist() == [
        "device_id",
        "v",
    ]
    assert {"telemetry", "totals"} <= set(engine.query("SHOW TABLES").column(0).to_pylist())
    assert engine.query("WITH x AS (SELECT 1 AS a) SELECT a FROM x").to_pydict() == {"a": [1]}
    assert engine.query("VALUES (1), (2)").num_rows == 2
    assert engine.query("EXPLAIN SELECT * FROM totals").num_rows >= 1


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO totals VALUES ('z', 1)",
        "UPDATE totals SET n = 0",
        "DELETE FROM totals",
        "CREATE TABLE evil AS SELECT 1",
        "DROP TABLE totals",
        "COPY totals TO '/tmp/sluice-evil.csv'",
        "ATTACH '/tmp/sluice-evil.duckdb' AS evil",
        "SET enable_external_access = true",
        "PRAGMA enable_profiling",
        "INSTALL httpfs",
        "EXPLAIN ANALYZE CREATE TABLE evil AS SELECT 1",
        "SELECT 1; DROP TABLE totals",
    ],
)
def test_writes_are_refused_before_running(stocked: Settings, sql: str) -> None:
    with pytest.raises(QueryError):
        QueryEngine(stocked).query(sql)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_text('/etc/hostname')",
        "SELECT * FROM read_parquet('/tmp/*.parquet')",
        "FROM glob('/etc/*')",
        "SELECT * FROM duckdb_secrets()",
    ],
)
def test_reading_arbitrary_files_is_blocked(stocked: Settings, sql: str) -> None:
    with pytest.raises(QueryError):
        QueryEngine(stocked).query(sql)


def test_warehouse_file_is_untouched_by_queries(stocked: Settings) -> None:
    QueryEngine(stocked).query("SELECT * FROM totals")
    with duckdb.connect(str(stocked.warehouse_url)) as con:  # not left locked
        assert con.execute("SELECT count(*) FROM totals").fetchall() == [(2,)]


def test_check_read_only_messages() -> None:
    with pytest.raises(QueryError, match="INSERT statements are not allowed"):
        check_read_only("insert into t values (1)")
    with pytest.raises(QueryError, match="exactly one statement"):
        check_read_only("select 1; select 2")
    with pytest.raises(QueryError, match="invalid SQL"):
        check_read_only("selec 1")
    check_read_only("explain analyze select 1")


def test_unknown_table_and_empty_home(settings: Settings) -> None:
    engine = QueryEngine(settings)
    assert engine.tables() == []
    assert engine.query("SELECT 42 AS x").to_pydict() == {"x": [42]}
    with pytest.raises(QueryError, match="nope"):
        engine.query("SELECT * FROM nope")


def test_timeout_stops_a_long_query(settings: Settings) -> None:
    engine = QueryEngine(settings, timeout=0.2)
    with pytest.raises(QueryError, match=r"longer than 0\.2s"):
        engine.query("SELECT count(*) FROM range(100000000000) a, range(10) b")


def test_dead_letters_are_queryable(settings: Settings) -> None:
    ctx = EpochContext("p", 1)
    ctx.dead_letter("decode", "malformed JSON", pa.array(["{oops"]))
    dead_letter_sink(SinkContext("p", settings)).write(pa.concat_tables(ctx.dead_letters), 1)
    got = QueryEngine(settings).query("SELECT reason, raw FROM dead_letter")
    assert got.to_pylist() == [{"reason": "malformed JSON", "raw": "{oops"}]


class LockHolder:
    """Another process holding the warehouse open read-write until ``release()``."""

    def __init__(self, path: str) -> None:
        code = (
            "import duckdb, sys; c = duckdb.connect(sys.argv[1]); "
            "print('ready', flush=True); sys.stdin.read()"
        )
        self.process = subprocess.Popen(
            [sys.executable, "-c", code, path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "ready"

    def release(self) -> None:
        if self.process.returncode is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            self.process.wait(timeout=10)
            assert self.process.stdout is not None
            self.process.stdout.close()


@pytest.fixture
def holder(stocked: Settings) -> Iterator[LockHolder]:
    """The stocked warehouse locked by another process (released at the end)."""
    lock = LockHolder(str(stocked.warehouse_url))
    try:
        yield lock
    finally:
        lock.release()


def test_locked_warehouse_gives_a_clear_error(stocked: Settings, holder: LockHolder) -> None:
    engine = QueryEngine(stocked, lock_wait=0.2)
    with pytest.raises(QueryError, match="being written"):
        engine.query("SELECT * FROM telemetry")
    with pytest.raises(QueryError, match="being written"):
        engine.tables()
    holder.release()
    assert engine.query("SELECT count(*) FROM totals").column(0).to_pylist() == [2]
