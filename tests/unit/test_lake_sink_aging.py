"""LakeSink keeps its table snapshot between epochs and compacts the table as it ages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from deltalake import DeltaTable

from sluice.config.models import SinkConfig
from sluice.core.errors import ConfigError
from sluice.core.settings import Settings
from sluice.sinks.base import SinkContext
from sluice.sinks.lake import LakeSink
from sluice.storage.lake_tables import read_lake_table
from tests.unit.test_lake_sink import events


def lake_sink(settings: Settings, pipeline: str = "tele", **options: Any) -> LakeSink:
    config = SinkConfig.model_validate({"type": "lake", "table": "aging", **options})
    return LakeSink(config, SinkContext(pipeline, settings, "ts"))


def ids_in(settings: Settings) -> list[int]:
    return sorted(read_lake_table(settings, "aging", columns=["id"]).column("id").to_pylist())


def test_a_commit_by_another_handle_is_seen_before_writing(settings: Settings) -> None:
    """The snapshot in memory is not trusted once the log moved on: a replayed epoch that
    another handle (a previous owner of the stream) committed meanwhile is skipped."""
    first, second = lake_sink(settings), lake_sink(settings)
    assert first.write(events(0, 3), 1) is True
    assert first.write(events(3, 3), 2) is True
    assert second.write(events(6, 3), 3) is True  # e.g. the stream moved to another replica
    assert first.write(events(6, 3), 3) is False  # replayed here: held already
    assert first.write(events(9, 3), 4) is True
    assert ids_in(settings) == list(range(12))
    assert (
        DeltaTable(str(settings.lake_path("aging"))).transaction_version("sluice:tele:aging") == 4
    )


def test_consecutive_epochs_reuse_the_snapshot(settings: Settings) -> None:
    sink = lake_sink(settings)
    sink.write(events(0, 2), 1)
    handle = sink._delta
    for epoch in range(2, 6):
        sink.write(events((epoch - 1) * 2, 2), epoch)
    assert sink._delta is handle
    assert sink._version == 4  # its own (direct) appends advance the version it knows
    assert DeltaTable(str(settings.lake_path("aging"))).version() == 4
    assert ids_in(settings) == list(range(10))


def test_background_compaction_keeps_rows_and_exactly_once(settings: Settings) -> None:
    sink = lake_sink(settings, compact_every=5, partition_by="none")
    for epoch in range(1, 13):
        assert sink.write(events(epoch * 10, 2), epoch) is True
    sink.close()  # waits for a compaction still running
    table = DeltaTable(str(settings.lake_path("aging")))
    # small files merged (the history need not show the OPTIMIZE: with log_retention 0s the
    # log entries before the checkpoint that follows it may already be gone)
    assert len(table.file_uris()) < 12
    reopened = lake_sink(settings, compact_every=5, partition_by="none")
    assert reopened.write(events(120, 2), 12) is False  # still held after compaction
    assert reopened.write(events(130, 2), 13) is True
    assert ids_in(settings) == sorted(i for e in range(1, 14) for i in (e * 10, e * 10 + 1))


def test_compaction_can_be_turned_off(settings: Settings) -> None:
    sink = lake_sink(settings, compact_every=0, partition_by="none")
    for epoch in range(1, 8):
        sink.write(events(epoch, 1), epoch)
    sink.close()
    history = DeltaTable(str(settings.lake_path("aging"))).history()
    assert all(entry["operation"] != "OPTIMIZE" for entry in history)


def test_log_entries_before_the_checkpoint_are_dropped(settings: Settings) -> None:
    sink = lake_sink(settings, compact_every=5, partition_by="none")
    for epoch in range(1, 31):
        sink.write(events(epoch, 1), epoch)
        if sink._maintenance is not None:
            sink._maintenance.join()  # let each compaction finish (a clock-free test)
    sink.close()
    log = Path(settings.lake_path("aging")) / "_delta_log"
    assert len(list(log.glob("*.json"))) < 15
    table = DeltaTable(str(settings.lake_path("aging")))
    assert table.transaction_version("sluice:tele:aging") == 30
    assert ids_in(settings) == list(range(1, 31))


def test_a_long_retention_keeps_the_log(settings: Settings) -> None:
    sink = lake_sink(settings, compact_every=5, partition_by="none", log_retention="30d")
    for epoch in range(1, 13):
        sink.write(events(epoch, 1), epoch)
        if sink._maintenance is not None:
            sink._maintenance.join()
    sink.close()
    assert len(list((Path(settings.lake_path("aging")) / "_delta_log").glob("*.json"))) >= 12


def test_a_bad_retention_is_a_config_error(settings: Settings) -> None:
    with pytest.raises(ConfigError, match="duration"):
        lake_sink(settings, log_retention="soon")
