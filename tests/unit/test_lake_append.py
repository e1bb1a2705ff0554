"""Direct appends to local Delta tables (Parquet + log entry without delta-rs): what
delta-rs and readers see, exactly-once marks, races with other writers, and fallbacks."""

from __future__ import annotations

import json
import math
import threading
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from deltalake import DeltaTable, write_deltalake

import sluice.sinks.lake as lake_module
from sluice.config.models import SinkConfig
from sluice.core.settings import Settings
from sluice.sinks.base import SinkContext
from sluice.sinks.lake import LakeSink
from sluice.sinks.lake_append import file_stats, split_partitions
from sluice.storage.lake_tables import LOG_GAP, listing_retry
from tests.unit.test_lake_sink import T0, events, ids_in, lake_sink


def log_entries(settings: Settings, table: str = "telemetry") -> list[list[dict[str, Any]]]:
    log = Path(settings.lake_path(table)) / "_delta_log"
    return [
        [json.loads(line) for line in path.read_text().splitlines()]
        for path in sorted(log.glob("*.json"))
    ]


def writers(settings: Settings, table: str = "telemetry") -> list[str]:
    return [
        next(a["commitInfo"].get("clientVersion", "") for a in entry if "commitInfo" in a)
        for entry in log_entries(settings, table)
    ]


def test_appends_after_the_first_bypass_delta_rs_and_read_back(settings: Settings) -> None:
    sink = lake_sink(settings)
    for epoch in range(1, 5):
        assert sink.write(events((epoch - 1) * 3, 3), epoch) is True
    assert writers(settings)[0].startswith("delta-rs")  # the table is created by delta-rs
    assert writers(settings)[1:] == ["sluice"] * 3
    table = DeltaTable(str(settings.lake_path("telemetry")))
    assert table.version() == 3
    assert table.transaction_version("sluice:tele:telemetry") == 4
    assert ids_in(settings) == list(range(12))
    # partitioned by UTC event date like delta-rs writes (T0 is 22:00, hourly rows)
    dates = {
        str(r["event_date"]) for r in table.to_pyarrow_table(columns=["event_date"]).to_pylist()
    }
    assert dates == {"2026-03-01", "2026-03-02"}
    assert all("event_date=" in uri for uri in table.file_uris())


def test_direct_epochs_are_held_after_a_restart(settings: Settings) -> None:
    sink = lake_sink(settings)
    for epoch in range(1, 4):
        sink.write(events(epoch * 10, 2), epoch)
    sink.close()
    again = lake_sink(settings)
    assert again.last_epoch() == 3
    assert again.write(events(30, 2), 3) is False
    assert again.write(events(40, 2), 4) is True
    assert ids_in(settings) == [10, 11, 20, 21, 30, 31, 40, 41]


def test_a_version_taken_by_another_writer_is_retried_at_the_next(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer (another pipeline) commits the version this sink is about to create:
    the sink reads that commit and appends after it, its own marks intact."""
    mine = lake_sink(settings)
    config = SinkConfig.model_validate({"type": "lake", "table": "telemetry"})
    other = LakeSink(config, SinkContext("other", settings, "ts"))
    mine.write(events(0, 2), 1)
    mine.write(events(2, 2), 2)
    real = lake_module.commit_entry
    raced = []

    def racing(*args: Any, **kwargs: Any) -> bool:
        if not raced:
            raced.append(True)
            assert other.write(events(100, 2), 7) is True  # lands at the version mine wants
        return real(*args, **kwargs)

    monkeypatch.setattr(lake_module, "commit_entry", racing)
    assert mine.write(events(4, 2), 3) is True
    assert ids_in(settings) == [0, 1, 2, 3, 4, 5, 100, 101]
    assert raced and mine.write(events(4, 2), 3) is False
    table = DeltaTable(str(settings.lake_path("telemetry")))
    assert table.version() == 3
    assert table.transaction_version("sluice:tele:telemetry") == 3
    assert table.transaction_version("sluice:other:telemetry") == 7


def test_schema_change_after_direct_appends_goes_through_delta_rs(settings: Settings) -> None:
    sink = lake_sink(settings)
    for epoch in range(1, 4):
        sink.write(events(epoch * 2, 2), epoch)
    scored = events(8, 2).append_column("score", pa.array([0.5, 0.7]))
    assert sink.write(scored, 4) is True
    assert sink.write(events(10, 1).append_column("score", pa.array([0.1])), 5) is True
    assert writers(settings)[1:] == ["sluice", "sluice", writers(settings)[3], "sluice"]
    assert writers(settings)[3].startswith("delta-rs")
    table = DeltaTable(str(settings.lake_path("telemetry"))).to_pyarrow_table().sort_by("id")
    assert table.column("score").to_pylist() == [None] * 6 + [0.5, 0.7, 0.1]


def test_tables_with_features_or_odd_partitions_use_delta_rs(settings: Settings) -> None:
    path = str(settings.lake_path("featured"))
    write_deltalake(
        path,
        pa.table({"id": pa.array([0], pa.int64()), "v": [1.0]}),
        configuration={"delta.enableChangeDataFeed": "true"},
    )
    sink = lake_sink(settings, table="featured", partition_by="none")
    assert sink.write(pa.table({"id": pa.array([1], pa.int64()), "v": [2.0]}), 1) is True
    assert all(w.startswith("delta-rs") for w in writers(settings, "featured"))
    # a string partition value with a character a path would escape: delta-rs writes it
    odd = lake_sink(settings, table="odd", partition_by="site")
    odd.write(pa.table({"site": ["a"], "v": [1.0]}), 1)
    odd.write(pa.table({"site": ["b c"], "v": [2.0]}), 2)
    odd.write(pa.table({"site": ["b"], "v": [3.0]}), 3)
    assert writers(settings, "odd")[1].startswith("delta-rs")
    assert writers(settings, "odd")[2] == "sluice"
    rows = DeltaTable(str(settings.lake_path("odd"))).to_pyarrow_table().to_pylist()
    assert sorted((r["site"], r["v"]) for r in rows) == [("a", 1.0), ("b", 3.0), ("b c", 2.0)]


def test_statistics_are_safe_bounds() -> None:
    stamps = [
        datetime(2026, 1, 1, 0, 0, 0, 1500, tzinfo=UTC),
        datetime(2026, 1, 1, 0, 0, 1, 999_001, tzinfo=UTC),
        None,
    ]
    table = pa.table(
        {
            "ts": pa.array(stamps, pa.timestamp("us", tz="UTC")),
            "x": [1.5, math.nan, 2.0],
            "y": [3.0, None, -1.0],
            "n": pa.array([5, 7, None], pa.int64()),
            "s": ["b" * 40, "a" * 40, "c"],
            "d": pa.array([date(2026, 1, 2), date(2026, 1, 1), None], pa.date32()),
            "ok": [True, False, None],
            "tags": pa.array([[1], [], None], pa.list_(pa.int64())),
        }
    )
    stats = json.loads(file_stats(table))
    assert stats["numRecords"] == 3
    assert stats["minValues"]["ts"] == "2026-01-01T00:00:00.001Z"  # rounded down
    assert stats["maxValues"]["ts"] == "2026-01-01T00:00:02.000Z"  # rounded up
    assert "x" not in stats["minValues"] and "x" not in stats["maxValues"]  # has NaN
    assert (stats["minValues"]["y"], stats["maxValues"]["y"]) == (-1.0, 3.0)
    assert (stats["minValues"]["n"], stats["maxValues"]["n"]) == (5, 7)
    assert stats["minValues"]["s"] == "a" * 32  # a prefix is still a lower bound
    assert stats["maxValues"]["s"] == "c"
    assert (stats["minValues"]["d"], stats["maxValues"]["d"]) == ("2026-01-01", "2026-01-02")
    assert (stats["minValues"]["ok"], stats["maxValues"]["ok"]) == (False, True)
    assert stats["nullCount"] == {"ts": 1, "x": 0, "y": 1, "n": 1, "s": 0, "d": 1, "ok": 1}
    long_max = json.loads(file_stats(pa.table({"s": ["a", "z" * 33]})))
    assert "s" not in long_max["maxValues"]


@pytest.mark.parametrize(
    ("unit", "low", "high"),
    [
        ("s", 1_767_225_600, 1_767_225_601),
        ("ms", 1_767_225_600_001, 1_767_225_601_999),
        ("us", 1_767_225_600_000_999, 1_767_225_601_000_001),
        ("ns", 1_767_225_600_000_999_999, 1_767_225_601_000_000_001),
        ("us", -1_000_001, -1),
    ],
)
def test_file_stats_of_timestamps_in_every_unit(unit: str, low: int, high: int) -> None:
    """Bounds are read without ``as_py`` (which imports pandas): the same texts as from
    datetimes, in milliseconds rounded outwards (nanoseconds first cut to microseconds)."""
    column = pa.array([high, None, low], pa.timestamp(unit, tz="Europe/Paris"))
    stats = json.loads(file_stats(pa.table({"ts": column})))
    per_us = {"s": 10**6, "ms": 10**3, "us": 1}
    micros = [v // 1000 if unit == "ns" else v * per_us[unit] for v in (low, high)]
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    down = epoch + timedelta(milliseconds=micros[0] // 1000)
    up = epoch + timedelta(milliseconds=-(-micros[1] // 1000))
    assert stats["minValues"]["ts"] == down.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    assert stats["maxValues"]["ts"] == up.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def test_split_partitions_refuses_what_it_cannot_encode() -> None:
    days = pa.array([date(2026, 1, 1), date(2026, 1, 2), date(2026, 1, 1)], pa.date32())
    parts = split_partitions(pa.table({"event_date": days, "v": [1, 2, 3]}), ["event_date"])
    assert parts is not None
    assert [(values, part.column("v").to_pylist()) for values, part in parts] == [
        ({"event_date": "2026-01-01"}, [1, 3]),
        ({"event_date": "2026-01-02"}, [2]),
    ]
    assert split_partitions(pa.table({"p": ["a", None], "v": [1, 2]}), ["p"]) is None
    assert split_partitions(pa.table({"p": ["a/b"], "v": [1]}), ["p"]) is None
    stamp = pa.array([T0 + timedelta(hours=1)], pa.timestamp("us", tz="UTC"))
    assert split_partitions(pa.table({"p": stamp, "v": [1]}), ["p"]) is None


def test_split_partitions_by_two_columns() -> None:
    table = pa.table({"a": ["x", "y", "x", "x"], "b": [1, 1, 2, 1], "v": [1, 2, 3, 4]})
    parts = split_partitions(table, ["a", "b"])
    assert parts is not None
    assert sorted((sorted(values.items()), part.to_pydict()) for values, part in parts) == [
        ([("a", "x"), ("b", "1")], {"v": [1, 4]}),
        ([("a", "x"), ("b", "2")], {"v": [3]}),
        ([("a", "y"), ("b", "1")], {"v": [2]}),
    ]
    assert (
        split_partitions(pa.table({"a": ["x"], "b": pa.array([None], pa.int64())}), ["a", "b"])
        is None
    )


def test_a_listing_that_raced_with_commits_is_taken_again() -> None:
    calls: list[bool] = []
    guard = threading.Lock()

    def listing() -> str:
        calls.append(guard.locked())
        if len(calls) < 3:
            raise RuntimeError(f"kernel error: {LOG_GAP}, but found gap")
        return "snapshot"

    assert listing_retry(listing, attempts=3, guard=guard) == "snapshot"
    assert calls == [False, False, True]  # the last attempt holds back the appends
    with pytest.raises(ValueError, match="other"):
        listing_retry(lambda: (_ for _ in ()).throw(ValueError("other")))


def test_direct_appends_skip_files_by_their_statistics_and_survive_a_log_checkpoint(
    settings: Settings,
) -> None:
    sink = lake_sink(settings, partition_by="none")
    for epoch in range(1, 7):  # the first through delta-rs, then direct appends
        assert sink.write(events((epoch - 1) * 10, 10), epoch) is True
    assert writers(settings)[1:] == ["sluice"] * 5
    path = str(settings.lake_path("telemetry"))
    every = DeltaTable(path).to_pyarrow_table()
    # a filtered scan prunes files by their min/max: it must return exactly the same rows
    for low, high in [(0, 0), (15, 24), (35, 59), (58, 70)]:
        expected = sorted(i for i in every.column("id").to_pylist() if low <= i <= high)
        dataset = DeltaTable(path).to_pyarrow_dataset()
        found = dataset.to_table(filter=(ds.field("id") >= low) & (ds.field("id") <= high))
        assert sorted(found.column("id").to_pylist()) == expected
    DeltaTable(path).create_checkpoint()  # delta-rs parses every add action's statistics
    from_checkpoint = DeltaTable(path)
    assert from_checkpoint.transaction_version("sluice:tele:telemetry") == 6
    assert sorted(from_checkpoint.to_pyarrow_table().column("id").to_pylist()) == list(range(60))
