"""LakeSink over real Delta tables: per-epoch idempotency, partitions, schema evolution, S3."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from sluice.config.models import SinkConfig
from sluice.core.context import DEAD_LETTER_SCHEMA, EpochContext
from sluice.core.errors import ConfigError, SinkError
from sluice.core.settings import Settings
from sluice.sinks.base import SinkContext, create_sink
from sluice.sinks.dead_letter import count_dead_letters, dead_letter_sink, read_dead_letters
from sluice.sinks.lake import LakeSink, write_lake_table
from sluice.storage.lake_tables import (
    lake_row_count,
    lake_table_names,
    open_lake_table,
    read_lake_table,
)

T0 = datetime(2026, 3, 1, 22, 0, tzinfo=UTC)


def events(start: int, n: int, step: timedelta = timedelta(hours=1)) -> pa.Table:
    """Deterministic telemetry rows ``start .. start+n-1`` spaced by ``step``."""
    ids = list(range(start, start + n))
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "device_id": [f"d{i % 3}" for i in ids],
            "ts": pa.array([T0 + step * i for i in ids], pa.timestamp("us", tz="UTC")),
            "temperature": [20.0 + i / 10 for i in ids],
            "__origin": [f"file.jsonl:{i}" for i in ids],
        }
    )


def lake_sink(settings: Settings, table: str = "telemetry", **options: Any) -> LakeSink:
    config = SinkConfig.model_validate({"type": "lake", "table": table, **options})
    return LakeSink(config, SinkContext("tele", settings, "ts"))


def ids_in(settings: Settings, table: str = "telemetry") -> list[int]:
    return sorted(read_lake_table(settings, table, columns=["id"]).column("id").to_pylist())


def test_epoch_written_once_and_earlier_epochs_skipped(settings: Settings) -> None:
    sink = lake_sink(settings)
    assert sink.write(events(0, 5), 3) is True
    assert sink.write(events(0, 5), 3) is False
    assert sink.write(events(100, 5), 2) is False
    assert sink.write(events(5, 5), 4) is True
    assert ids_in(settings) == list(range(10))
    assert sink.last_epoch() == 4
    delta = open_lake_table(settings, "telemetry")
    assert delta.version() == 1  # one commit per written epoch
    assert delta.transaction_version("sluice:tele:telemetry") == 4


def test_replay_after_restart_is_skipped_by_a_new_sink(settings: Settings) -> None:
    lake_sink(settings).write(events(0, 4), 7)
    fresh = lake_sink(settings)
    assert fresh.write(events(0, 4), 7) is False
    assert fresh.write(events(4, 2), 8) is True
    assert ids_in(settings) == list(range(6))


def test_pipelines_are_idempotent_independently(settings: Settings) -> None:
    ours = lake_sink(settings)
    theirs = LakeSink(
        SinkConfig(type="lake", table="telemetry"), SinkContext("other", settings, "ts")
    )
    assert ours.write(events(0, 2), 5) is True
    assert theirs.write(events(2, 2), 5) is True
    assert ids_in(settings) == [0, 1, 2, 3]


def test_partitioned_by_utc_event_date(settings: Settings) -> None:
    lake_sink(settings).write(events(0, 5), 1)  # 22:00 on 1 March .. 02:00 on 2 March
    delta = open_lake_table(settings, "telemetry")
    assert delta.metadata().partition_columns == ["event_date"]
    table = read_lake_table(settings, "telemetry").sort_by("id")
    assert table.schema.field("event_date").type == pa.date32()
    dates = [d.isoformat() for d in table.column("event_date").to_pylist()]
    assert dates == ["2026-03-01", "2026-03-01", "2026-03-02", "2026-03-02", "2026-03-02"]
    folders = sorted(
        p.name
        for p in Path(delta.table_uri.removeprefix("file://")).iterdir()
        if p.name.startswith("event_date=")
    )
    assert folders == ["event_date=2026-03-01", "event_date=2026-03-02"]


def test_partition_option_and_no_partitions(settings: Settings) -> None:
    lake_sink(settings, "by_device", partition_by="device_id").write(events(0, 6), 1)
    lake_sink(settings, "flat", partition_by="none").write(events(0, 6), 1)
    assert open_lake_table(settings, "by_device").metadata().partition_columns == ["device_id"]
    assert open_lake_table(settings, "flat").metadata().partition_columns == []
    assert "event_date" not in read_lake_table(settings, "flat").column_names


def test_bad_partition_option_is_a_config_error(settings: Settings) -> None:
    with pytest.raises(ConfigError, match="partition_by"):
        lake_sink(settings, partition_by=3)
    with pytest.raises(SinkError, match="no such column"):
        lake_sink(settings, "t", partition_by=["nope"]).write(events(0, 1), 1)


def test_table_without_event_time_is_not_partitioned(settings: Settings) -> None:
    sink = LakeSink(SinkConfig(type="lake", table="agg"), SinkContext("p", settings, "ts"))
    assert sink.write(pa.table({"device_id": ["a"], "n": [3]}), 1) is True
    assert open_lake_table(settings, "agg").metadata().partition_columns == []


def test_internal_and_null_typed_columns_are_not_written(settings: Settings) -> None:
    table = events(0, 3).append_column("unknown", pa.nulls(3))
    lake_sink(settings).write(table, 1)
    columns = read_lake_table(settings, "telemetry").column_names
    assert "__origin" not in columns and "unknown" not in columns


def test_schema_evolution_merges_new_columns(settings: Settings) -> None:
    sink = lake_sink(settings)
    sink.write(events(0, 2), 1)
    scored = events(2, 2).append_column("iforest_score", pa.array([0.1, 0.9]))
    sink.write(scored, 2)
    sink.write(events(4, 1).drop_columns(["temperature"]), 3)
    table = read_lake_table(settings, "telemetry").sort_by("id")
    assert table.column("iforest_score").to_pylist() == [None, None, 0.1, 0.9, None]
    assert table.column("temperature").to_pylist()[-1] is None


def test_incompatible_type_change_is_a_sink_error(settings: Settings) -> None:
    sink = lake_sink(settings, partition_by="none")
    sink.write(pa.table({"id": [1], "v": [1.5]}), 1)
    with pytest.raises(SinkError, match="lake table 'telemetry'"):
        sink.write(pa.table({"id": [2], "v": [[1, 2]]}), 2)
    assert sink.write(pa.table({"id": [3], "v": [2.5]}), 2) is True


def test_empty_batch_is_a_noop_that_succeeds(settings: Settings) -> None:
    sink = lake_sink(settings)
    assert sink.write(events(0, 0), 1) is True
    assert lake_table_names(settings) == []
    sink.write(events(0, 2), 2)
    assert sink.write(events(0, 0), 3) is True
    assert open_lake_table(settings, "telemetry").version() == 0


def test_side_output_helper_and_create_sink(settings: Settings) -> None:
    context = SinkContext("tele", settings, "ts")
    windows = pa.table({"device_id": ["d0", "d1"], "avg_t": [20.5, 21.0]})
    assert write_lake_table(context, "telemetry_1m", windows, 4) is True
    assert write_lake_table(context, "telemetry_1m", windows, 4) is False
    assert isinstance(create_sink(SinkConfig(type="lake", table="x"), context), LakeSink)
    assert lake_table_names(settings) == ["telemetry_1m"]
    assert lake_row_count(open_lake_table(settings, "telemetry_1m")) == 2


def test_missing_table_name_is_a_config_error(settings: Settings) -> None:
    with pytest.raises(ConfigError, match="table"):
        LakeSink(SinkConfig(type="lake"), SinkContext("p", settings))


def dead_letters(pipeline: str, epoch: int, reasons: list[str]) -> pa.Table:
    ctx = EpochContext(pipeline, epoch)
    ctx.dead_letter(
        "decode", pa.array(reasons), pa.array([f'{{"n": {i}' for i in range(len(reasons))])
    )
    return pa.concat_tables(ctx.dead_letters)


def test_dead_letters_are_stored_and_listed(settings: Settings) -> None:
    assert read_dead_letters(settings).schema == DEAD_LETTER_SCHEMA
    assert count_dead_letters(settings) == 0
    first = dead_letter_sink(SinkContext("a", settings, "ts"))
    second = dead_letter_sink(SinkContext("b", settings, "ts"))
    assert first.write(dead_letters("a", 1, ["malformed JSON", "late"]), 1) is True
    assert first.write(dead_letters("a", 1, ["malformed JSON", "late"]), 1) is False
    assert second.write(dead_letters("b", 1, ["missing required field ts"]), 1) is True
    listed = read_dead_letters(settings)
    assert listed.schema == DEAD_LETTER_SCHEMA
    assert listed.num_rows == 3 and count_dead_letters(settings) == 3
    only_b = read_dead_letters(settings, pipeline="b")
    assert only_b.column("reason").to_pylist() == ["missing required field ts"]
    assert read_dead_letters(settings, limit=1).num_rows == 1
    assert count_dead_letters(settings, pipeline="a") == 2
    assert open_lake_table(settings, "dead_letter").metadata().partition_columns == []


# --- S3 through a moto server ---------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def s3_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings whose lake is ``s3://lake/root`` on a local moto server."""
    moto_server = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for key, value in {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ALLOW_HTTP": "true",
        "AWS_S3_ALLOW_UNSAFE_RENAME": "true",
    }.items():
        monkeypatch.setenv(key, value)
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="lake")
    try:
        yield Settings(
            home=tmp_path / "home",
            lake_root="s3://lake/root",
            warehouse_url=str(tmp_path / "w.duckdb"),
        )
    finally:
        server.stop()


def test_lake_on_s3(s3_settings: Settings) -> None:
    sink = lake_sink(s3_settings)
    assert sink.write(events(0, 4), 1) is True
    assert sink.write(events(0, 4), 1) is False
    assert lake_table_names(s3_settings) == ["telemetry"]
    assert ids_in(s3_settings) == [0, 1, 2, 3]
    assert os.environ["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
    uri = s3_settings.lake_path("telemetry")
    assert DeltaTable(uri).transaction_version("sluice:tele:telemetry") == 1
