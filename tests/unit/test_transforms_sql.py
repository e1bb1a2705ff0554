"""filter, derive, select, rename and build_transforms against independent results."""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from sluice.config.models import TransformStep
from sluice.core.context import EpochContext
from sluice.core.errors import ConfigError
from sluice.core.settings import Settings
from sluice.transforms.build import build_transforms
from sluice.transforms.dedupe import DedupeTransform
from sluice.transforms.enrich import EnrichTransform
from sluice.transforms.sql import (
    DeriveTransform,
    FilterTransform,
    RenameTransform,
    SelectTransform,
)
from sluice.transforms.window import WindowTransform


def telemetry(n: int = 1000, seed: int = 7) -> pa.Table:
    rng = np.random.default_rng(seed)
    temperature = rng.normal(70, 15, n)
    temperature[rng.random(n) < 0.05] = np.nan
    status = np.where(rng.random(n) < 0.1, "maintenance", "ok")
    return pa.table(
        {
            "device_id": pa.array([f"d{i % 17}" for i in range(n)]),
            "ts": pa.array(
                1_700_000_000_000_000 + np.arange(n) * 1_000_000, pa.timestamp("us", tz="UTC")
            ),
            "temperature": pa.array(temperature, from_pandas=True),
            "status": pa.array(status).to_pylist(),
            "__origin": pa.array([f"file.jsonl:{i}" for i in range(n)]),
        }
    )


def new_ctx() -> EpochContext:
    return EpochContext("p", 1)


def test_filter_matches_duckdb_and_counts_filtered_rows() -> None:
    table = events = telemetry()
    ctx = new_ctx()
    out = FilterTransform("status <> 'maintenance' AND temperature > 60", 0).apply(table, ctx)
    assert events.num_rows
    relation = duckdb.sql("SELECT * FROM events WHERE status <> 'maintenance' AND temperature > 60")
    assert relation is not None
    expected = relation.to_arrow_table()
    assert out.column("__origin").to_pylist() == expected.column("__origin").to_pylist()
    assert out.schema == table.schema
    assert ctx.counters["filtered"] == table.num_rows - out.num_rows > 0


def test_filter_null_condition_counts_as_filtered() -> None:
    table = pa.table({"x": [1, None, 3], "__origin": ["a", "b", "c"]})
    ctx = new_ctx()
    out = FilterTransform("x > 0", 0).apply(table, ctx)
    assert out.column("__origin").to_pylist() == ["a", "c"]
    assert ctx.counters["filtered"] == 1
    everything = FilterTransform("NULL", 1).apply(table, ctx)
    assert everything.num_rows == 0 and ctx.counters["filtered"] == 4


def test_derive_adds_and_replaces_in_order_and_keeps_internal_columns() -> None:
    table = telemetry(200)
    derive = DeriveTransform(
        {
            "temp_c": "(temperature - 32) * 5 / 9",
            "temperature": "temp_c * 2",
            "hot": "temperature > 50",
        },
        1,
    )
    out = derive.apply(table, new_ctx())
    assert out.column_names == [*table.column_names, "temp_c", "hot"]
    raw = table.column("temperature").to_numpy(zero_copy_only=False)
    temp_c = (raw - 32) * 5 / 9
    np.testing.assert_allclose(out.column("temp_c").to_numpy(zero_copy_only=False), temp_c)
    np.testing.assert_allclose(out.column("temperature").to_numpy(zero_copy_only=False), temp_c * 2)
    assert out.column("hot").to_pylist() == [
        None if np.isnan(v) else bool(v > 50) for v in temp_c * 2
    ]
    assert out.column("__origin").equals(table.column("__origin"))
    assert out.schema.field("ts").type == pa.timestamp("us", tz="UTC")


def test_syntax_error_is_a_config_error_naming_the_step() -> None:
    steps = [TransformStep(filter="x > 1"), TransformStep(derive={"y": "(x + 2"})]
    with pytest.raises(ConfigError, match=r"transforms\[1\]\.derive\.y: invalid SQL"):
        build_transforms(steps, event_time=None, settings=Settings())
    with pytest.raises(ConfigError, match=r"transforms\[0\]\.filter"):
        build_transforms([TransformStep(filter="status = ")], event_time=None, settings=Settings())


def test_unknown_column_is_a_config_error_on_the_first_batch() -> None:
    table = telemetry(10)
    with pytest.raises(ConfigError, match=r"transforms\[2\]\.filter: .*nope"):
        FilterTransform("nope > 1", 2).apply(table, new_ctx())
    with pytest.raises(ConfigError, match=r"transforms\[0\]\.derive: .*missing_col"):
        DeriveTransform({"a": "missing_col + 1"}, 0).apply(table, new_ctx())
    with pytest.raises(ConfigError, match="must be a boolean"):
        FilterTransform("temperature + 1", 0).apply(table, new_ctx())


def test_runtime_error_dead_letters_the_failing_rows_only() -> None:
    values = [str(i) for i in range(1000)]
    for bad in (3, 500, 998):
        values[bad] = f"oops{bad}"
    table = pa.table({"s": values, "__origin": [f"o{i}" for i in range(1000)]})
    ctx = new_ctx()
    out = DeriveTransform({"n": "CAST(s AS INTEGER)"}, 4).apply(table, ctx)
    assert out.num_rows == 997
    assert out.column("n").to_pylist() == [i for i in range(1000) if i not in (3, 500, 998)]
    dead = pa.concat_tables(ctx.dead_letters)
    assert dead.column("stage").to_pylist() == ["transform[4]"] * 3
    assert dead.column("origin").to_pylist() == ["o3", "o500", "o998"]
    assert all("derive failed" in r and "oops" in r for r in dead.column("reason").to_pylist())
    assert ctx.counters["dead_lettered"] == 3
    # the next batch goes through normally
    again = DeriveTransform({"n": "CAST(s AS INTEGER)"}, 4).apply(table.slice(0, 3), ctx)
    assert again.column("n").to_pylist() == [0, 1, 2]


def test_filter_runtime_error_dead_letters_and_counts_stay_exact() -> None:
    table = pa.table({"s": ["1", "2", "x", "4"]})
    ctx = new_ctx()
    out = FilterTransform("CAST(s AS INTEGER) > 1", 0).apply(table, ctx)
    assert out.column("s").to_pylist() == ["2", "4"]
    assert ctx.counters["filtered"] == 1 and ctx.counters["dead_lettered"] == 1


def test_empty_batches_pass_through() -> None:
    empty = telemetry(5).slice(0, 0)
    ctx = new_ctx()
    assert FilterTransform("temperature > 1", 0).apply(empty, ctx).num_rows == 0
    derived = DeriveTransform({"t2": "temperature * 2"}, 1).apply(empty, ctx)
    assert derived.num_rows == 0 and "t2" in derived.column_names
    assert ctx.counters["filtered"] == 0


def test_select_keeps_internal_columns_and_rejects_unknown() -> None:
    table = telemetry(5)
    out = SelectTransform(["temperature", "device_id"], 0).apply(table, new_ctx())
    assert out.column_names == ["temperature", "device_id", "__origin"]
    with pytest.raises(ConfigError, match=r"transforms\[3\]\.select: unknown column.*'nope'"):
        SelectTransform(["nope"], 3).apply(table, new_ctx())


def test_rename() -> None:
    table = telemetry(5)
    out = RenameTransform({"temperature": "temp_f"}, 0).apply(table, new_ctx())
    assert out.column_names == ["device_id", "ts", "temp_f", "status", "__origin"]
    assert out.column("temp_f").equals(table.column("temperature"))
    with pytest.raises(ConfigError, match="unknown column"):
        RenameTransform({"nope": "x"}, 0).apply(table, new_ctx())
    with pytest.raises(ConfigError, match="duplicate"):
        RenameTransform({"temperature": "status"}, 0).apply(table, new_ctx())


def test_build_transforms_makes_each_kind(tmp_path) -> None:
    lookup = tmp_path / "devices.csv"
    lookup.write_text("device_id,site\nd1,north\n")
    steps = [
        TransformStep.model_validate(s)
        for s in [
            {"filter": "x > 1"},
            {"derive": {"y": "x * 2"}},
            {"select": ["x", "y"]},
            {"rename": {"y": "z"}},
            {"enrich": {"path": str(lookup), "on": "device_id"}},
            {"dedupe": {"key": "device_id", "window": "1m"}},
            {"window": {"key": "device_id", "size": "1m", "aggregate": {"n": "count(*)"}}},
        ]
    ]
    built = build_transforms(steps, event_time="ts", settings=Settings(home=tmp_path))
    kinds = [
        FilterTransform,
        DeriveTransform,
        SelectTransform,
        RenameTransform,
        EnrichTransform,
        DedupeTransform,
        WindowTransform,
    ]
    assert [type(t) for t in built] == kinds
    assert built[-1].replaces_stream  # type: ignore[attr-defined]


def test_build_errors_name_the_step_index(tmp_path) -> None:
    window = TransformStep.model_validate(
        {"window": {"size": "1m", "aggregate": {"n": "count(*)"}}}
    )
    with pytest.raises(ConfigError, match=r"transforms\[1\]\.window: .*event-time"):
        build_transforms(
            [TransformStep(filter="true"), window],
            event_time=None,
            settings=Settings(home=tmp_path),
        )
    dedupe = TransformStep.model_validate({"dedupe": {"key": "k"}})
    with pytest.raises(ConfigError, match=r"transforms\[0\]\.dedupe"):
        build_transforms([dedupe], event_time=None, settings=Settings(home=tmp_path))


def test_filter_then_derive_on_a_large_batch_is_vectorised() -> None:
    table = telemetry(100_000, seed=3)
    ctx = new_ctx()
    out = FilterTransform("status = 'ok'", 0).apply(table, ctx)
    out = DeriveTransform({"temp_c": "(temperature - 32) * 5 / 9"}, 1).apply(out, ctx)
    ok = pc.equal(table.column("status"), "ok")
    assert out.num_rows == pc.sum(ok).as_py()
    assert ctx.counters["filtered"] + out.num_rows == table.num_rows
