"""Lookup joins against CSV/Parquet files and a DuckDB warehouse table."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sluice.config.models import EnrichSpec
from sluice.core.context import EpochContext
from sluice.core.errors import ConfigError
from sluice.core.settings import Settings
from sluice.transforms.enrich import EnrichTransform


def stream(n: int = 500, seed: int = 1) -> pa.Table:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 12, n)  # d10 and d11 are not in the lookup
    return pa.table(
        {
            "device_id": pa.array([f"d{i}" for i in ids]),
            "temp": rng.normal(20, 3, n),
            "__origin": pa.array([f"o{i}" for i in range(n)]),
        }
    )


def write_devices(path: Path, site: str = "north", extra: str = "") -> None:
    rows = "".join(f"d{i},{site}-{i},{i * 10}\n" for i in range(10))
    path.write_text("device_id,site,capacity\n" + rows + extra)


def enrich(tmp_path: Path, **spec: object) -> EnrichTransform:
    return EnrichTransform(EnrichSpec.model_validate(spec), 2, Settings(home=tmp_path))


def test_left_join_keeps_order_and_nulls_for_unmatched(tmp_path: Path) -> None:
    write_devices(tmp_path / "devices.csv")
    table = stream()
    out = enrich(tmp_path, path=str(tmp_path / "devices.csv"), on="device_id").apply(
        table, EpochContext("p", 1)
    )
    assert out.column_names == [*table.column_names, "site", "capacity"]
    assert out.column("__origin").equals(table.column("__origin"))
    expected = [
        None if d in ("d10", "d11") else f"north-{d[1:]}"
        for d in table.column("device_id").to_pylist()
    ]
    assert out.column("site").to_pylist() == expected


def test_inner_join_drops_unmatched_as_filtered(tmp_path: Path) -> None:
    write_devices(tmp_path / "devices.csv")
    table = stream()
    ctx = EpochContext("p", 1)
    op = enrich(
        tmp_path,
        path=str(tmp_path / "devices.csv"),
        on="device_id",
        how="inner",
        columns=["capacity"],
        prefix="dev_",
    )
    out = op.apply(table, ctx)
    matched = [d not in ("d10", "d11") for d in table.column("device_id").to_pylist()]
    assert out.column("__origin").to_pylist() == [
        o for o, m in zip(table.column("__origin").to_pylist(), matched, strict=True) if m
    ]
    assert out.column_names == [*table.column_names, "dev_capacity"]
    assert ctx.counters["filtered"] == table.num_rows - out.num_rows == matched.count(False)


def test_parquet_lookup_multi_key_and_first_row_wins(tmp_path: Path) -> None:
    pq.write_table(
        pa.table(
            {"a": [1, 1, 2, 1], "b": ["x", "y", "x", "x"], "label": ["first", "ay", "bx", "second"]}
        ),
        tmp_path / "l.parquet",
    )
    table = pa.table({"a": [2, 1, 1, 3, None], "b": ["x", "x", "y", "x", "x"]})
    out = enrich(tmp_path, path=str(tmp_path / "l.parquet"), on=["a", "b"]).apply(
        table, EpochContext("p", 1)
    )
    assert out.column("label").to_pylist() == ["bx", "first", "ay", None, None]


def test_file_is_re_read_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "devices.csv"
    write_devices(path, site="north")
    op = enrich(tmp_path, path=str(path), on="device_id", columns=["site"])
    table = pa.table({"device_id": ["d1", "d12"]})
    assert op.apply(table, EpochContext("p", 1)).column("site").to_pylist() == ["north-1", None]
    write_devices(path, site="south", extra="d12,east-12,0\n")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    out = op.apply(table, EpochContext("p", 2))
    assert out.column("site").to_pylist() == ["south-1", "east-12"]


def test_a_broken_rewrite_keeps_the_previous_lookup(tmp_path: Path) -> None:
    path = tmp_path / "devices.csv"
    write_devices(path)
    op = enrich(tmp_path, path=str(path), on="device_id", columns=["site"])
    table = pa.table({"device_id": ["d1"]})
    op.apply(table, EpochContext("p", 1))
    path.write_text('device_id,site\n"unterminated\n')
    assert op.apply(table, EpochContext("p", 2)).column("site").to_pylist() == ["north-1"]
    path.unlink()
    assert op.apply(table, EpochContext("p", 3)).column("site").to_pylist() == ["north-1"]


def test_key_types_are_matched(tmp_path: Path) -> None:
    (tmp_path / "ids.csv").write_text("id,name\n1,one\n2,two\n")
    out = enrich(tmp_path, path=str(tmp_path / "ids.csv"), on="id").apply(
        pa.table({"id": ["2", "1", "3"]}), EpochContext("p", 1)
    )
    assert out.column("name").to_pylist() == ["two", "one", None]


def test_config_errors(tmp_path: Path) -> None:
    write_devices(tmp_path / "devices.csv")
    table = stream(5)
    with pytest.raises(ConfigError, match=r"transforms\[2\]\.enrich: .*does not exist"):
        enrich(tmp_path, path=str(tmp_path / "nope.csv"), on="device_id").apply(
            table, EpochContext("p", 1)
        )
    with pytest.raises(ConfigError, match="no column"):
        enrich(tmp_path, path=str(tmp_path / "devices.csv"), on="serial").apply(
            table, EpochContext("p", 1)
        )
    with pytest.raises(ConfigError, match="prefix"):
        enrich(
            tmp_path, path=str(tmp_path / "devices.csv"), on="device_id", columns=["site"]
        ).apply(table.append_column("site", pa.array(["x"] * 5)), EpochContext("p", 1))


def test_warehouse_table_lookup_and_refresh(tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    con = duckdb.connect(str(warehouse))
    con.execute(
        "CREATE TABLE devices AS SELECT 'd' || i AS device_id, 'site' || i AS site "
        "FROM range(10) t(i)"
    )
    con.close()
    settings = Settings(home=tmp_path, warehouse_url=str(warehouse))
    op = EnrichTransform(EnrichSpec(table="devices", on="device_id"), 0, settings)
    table = pa.table({"device_id": ["d3", "d42"]})
    assert op.apply(table, EpochContext("p", 1)).column("site").to_pylist() == ["site3", None]
    con = duckdb.connect(str(warehouse))  # a writer holds the file: keep the previous lookup
    con.execute("INSERT INTO devices VALUES ('d42', 'new')")
    con.execute("CHECKPOINT")
    assert op.apply(table, EpochContext("p", 2)).column("site").to_pylist() == ["site3", None]
    con.close()
    out = op.apply(table, EpochContext("p", 3))
    assert out.column("site").to_pylist() == ["site3", "new"]


def test_empty_batch(tmp_path: Path) -> None:
    write_devices(tmp_path / "devices.csv")
    out = enrich(tmp_path, path=str(tmp_path / "devices.csv"), on="device_id").apply(
        stream(3).slice(0, 0), EpochContext("p", 1)
    )
    assert out.num_rows == 0 and "site" in out.column_names
