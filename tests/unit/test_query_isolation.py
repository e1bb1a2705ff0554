"""Queries read snapshots that never block a warehouse sink, within memory and byte limits."""

from __future__ import annotations

import dataclasses
import threading

import pyarrow as pa
import pytest

from sluice.config.models import SinkConfig
from sluice.connectors import duckdb_shared
from sluice.core.errors import QueryError
from sluice.core.settings import Settings
from sluice.sinks.base import SinkContext
from sluice.sinks.warehouse import WarehouseSink
from sluice.storage.query import QueryEngine, ResultTooLargeError

SLOW = "SELECT count(*) FROM readings, range(100000000000) AS r(x) WHERE x + v < 0"


def _sink(settings: Settings) -> WarehouseSink:
    config = SinkConfig.model_validate({"type": "warehouse", "table": "readings"})
    return WarehouseSink(config, SinkContext("p", settings, "ts"))


def _rows(epoch: int) -> pa.Table:
    return pa.table({"epoch": [epoch] * 10, "v": [float(i) for i in range(10)]})


def test_a_sink_commits_epochs_while_a_slow_query_scans_the_warehouse(
    settings: Settings,
) -> None:
    sink = _sink(settings)
    try:
        assert sink.write(_rows(1), 1)
        engine = QueryEngine(settings, timeout=600)
        errors: list[BaseException] = []

        def slow_query() -> None:
            try:
                engine.query(SLOW)
            except QueryError as exc:
                errors.append(exc)

        query = threading.Thread(target=slow_query)
        query.start()
        path = str(settings.warehouse_url)
        instance = duckdb_shared._instances.get(duckdb_shared._key(path))
        while query.is_alive() and (instance is None or instance.users == 0):
            query.join(0.01)  # until the query holds its snapshot of the warehouse
            instance = duckdb_shared._instances.get(duckdb_shared._key(path))
        assert query.is_alive()
        for epoch in range(2, 12):  # every write commits at once, the query still running
            assert sink.write(_rows(epoch), epoch) is True
        assert instance is not None and instance.users > 0 and query.is_alive()
        committed = QueryEngine(settings).query("SELECT count(DISTINCT epoch) FROM readings")
        assert committed.column(0).to_pylist() == [11]
        assert query.is_alive()
        engine.interrupt()
        query.join()
    finally:
        sink.close()
    assert [str(e) for e in errors] == ["the query was interrupted"]


def test_result_bytes_are_bounded_before_the_result_is_built(settings: Settings) -> None:
    engine = QueryEngine(settings)
    with pytest.raises(ResultTooLargeError, match="limit of 1000000 bytes") as caught:
        engine.query("SELECT list(range) AS l FROM range(10000000)", max_bytes=1_000_000)
    assert caught.value.limit == 1_000_000
    small = engine.query("SELECT range AS i FROM range(100)", limit=10, max_bytes=1_000_000)
    assert small.column("i").to_pylist() == list(range(10))


def test_each_query_has_its_own_memory_and_spill_limits(settings: Settings) -> None:
    tight = dataclasses.replace(settings, query_memory_limit="40MB", query_temp_limit="20MB")
    with pytest.raises(QueryError, match="Out of Memory"):
        QueryEngine(tight).query(
            "SELECT count(*) FROM (SELECT range % 1000003 AS k, list(range) AS l "
            "FROM range(30000000) GROUP BY k)"
        )
    assert QueryEngine(tight).query("SELECT 1 AS x").to_pydict() == {"x": [1]}


def test_a_bad_size_setting_is_named(settings: Settings) -> None:
    with pytest.raises(QueryError, match="invalid size '1 lot'"):
        QueryEngine(dataclasses.replace(settings, query_memory_limit="1 lot"))
