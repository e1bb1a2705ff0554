"""Every registered source: resume, exact replay, nothing to read, all-bad rows, pure build.

Protocol checks drive the source directly (``open``/``poll``/``commit``/``close``); pipeline
checks run a real pipeline file through the runner API with ``until_idle``.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from sluice.config.loader import load_pipeline
from sluice.config.models import SourceConfig
from sluice.core.settings import Settings
from sluice.runners.create import run
from sluice.runners.stats import RunStats
from sluice.sinks.dead_letter import read_dead_letters
from sluice.sources.base import Position, Source, SourceBatch, SourceContext, create_source
from sluice.storage.lake_tables import open_delta
from tests.conformance.conftest import (
    PIPELINE,
    REGISTERED_SOURCES,
    SOURCE_SERVICES,
    SOURCES,
    SourceCase,
    no_io,
    services_for,
    table_entry,
)

MAX_ROWS = 8
WAIT = 30.0  # seconds a poll loop may take to collect what was written (a broker is slow)


@pytest.fixture(params=REGISTERED_SOURCES)
def case(request: pytest.FixtureRequest, sluice_home: Path) -> SourceCase:
    """The source under test, with its data writer and services."""
    name = request.param
    factory = table_entry(SOURCES, name, "source")
    return factory(sluice_home, services_for(request, SOURCE_SERVICES.get(name, ())))


def build(config: dict[str, Any], home: Path) -> Source:
    """A fresh source instance (its own consumer group, so instances never wait on each other)."""
    context = SourceContext(PIPELINE, str(home), group=f"g-{uuid.uuid4().hex[:8]}")
    return create_source(SourceConfig.model_validate(config), context)


def drain(source: Source, want: int, until: Position | None = None) -> list[SourceBatch]:
    """Poll until ``want`` rows arrived (or ``WAIT`` passed)."""
    batches: list[SourceBatch] = []
    deadline = time.monotonic() + WAIT
    while sum(b.data.num_rows for b in batches) < want and time.monotonic() < deadline:
        batch = source.poll(MAX_ROWS, 1.0, until)
        if batch is not None:
            assert batch.data.num_rows <= MAX_ROWS
            batches.append(batch)
    return batches


def nothing(batch: SourceBatch | None) -> bool:
    """True for a poll that gave no record (None, or an empty batch at a replay's end)."""
    return batch is None or batch.data.num_rows == 0


def rows(batches: list[SourceBatch]) -> list[dict[str, Any]]:
    """The records of ``batches`` in order."""
    return pa.concat_tables([b.data for b in batches]).to_pylist() if batches else []


def test_a_fresh_instance_resumes_exactly_after_a_committed_position(
    case: SourceCase, sluice_home: Path
) -> None:
    config = case.config(30, 0, 0)
    first = build(config, sluice_home)
    first.open(None)
    everything = drain(first, 30)
    assert sum(b.data.num_rows for b in everything) == 30
    committed = everything[1].position
    first.commit(committed)
    first.close()
    done = sum(b.data.num_rows for b in everything[:2])

    second = build(config, sluice_home)
    second.open(committed)
    try:
        assert rows(drain(second, 30 - done)) == rows(everything)[done:]
        assert nothing(second.poll(MAX_ROWS, 1.0))
    finally:
        second.close()


def test_an_uncommitted_range_replays_the_very_same_records(
    case: SourceCase, sluice_home: Path
) -> None:
    config = case.config(30, 0, 0)
    first = build(config, sluice_home)
    first.open(None)
    read = drain(first, 24)
    committed, end = read[0].position, read[-1].position
    first.commit(committed)
    first.close()  # a crash: nothing after the first batch was committed

    again = build(config, sluice_home)
    again.open(committed)
    try:
        replayed = drain(again, sum(b.data.num_rows for b in read[1:]), until=end)
        assert rows(replayed) == rows(read[1:])
        assert replayed[-1].position == end
        assert nothing(again.poll(MAX_ROWS, 0.5, until=end))
    finally:
        again.close()


def test_nothing_to_read_polls_none(case: SourceCase, sluice_home: Path) -> None:
    source = build(case.config(0, 0, 0), sluice_home)
    source.open(None)
    try:
        assert nothing(source.poll(MAX_ROWS, 1.0))
    finally:
        source.close()


def test_close_without_open_and_twice_is_harmless(case: SourceCase, sluice_home: Path) -> None:
    config = case.config(2, 0, 0)
    build(config, sluice_home).close()
    source = build(config, sluice_home)
    source.open(None)
    source.close()
    source.close()


def test_construction_does_no_io(
    case: SourceCase, sluice_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = case.config(2, 0, 0)
    with no_io(tmp_path, monkeypatch):
        build(config, sluice_home)


# -- through the runner ----------------------------------------------------------------------
def run_pipeline(
    case: SourceCase,
    config: dict[str, Any],
    bad: int,
    tmp_path: Path,
    name: str = PIPELINE,
    max_rows: int = 10_000,
) -> RunStats:
    """Run a pipeline of this source into the lake table ``name`` until idle."""
    spec: dict[str, Any] = {"name": name, "source": config}
    schema = case.schema(bad)
    if schema is not None:
        spec["schema"] = schema
    spec["batch"] = {"max_rows": max_rows, "max_latency": "100ms"}
    spec["sinks"] = [{"type": "lake", "table": name, "partition_by": "none"}]
    file = tmp_path / f"{name}.yaml"
    file.write_text(json.dumps(spec))
    return run(load_pipeline(file), until_idle=True, idle_timeout=1.0)


def lake_rows(settings: Settings, table: str) -> list[dict[str, Any]]:
    """The rows of a lake table, sorted."""
    delta = open_delta(settings.lake_path(table))
    assert delta is not None, f"lake table {table!r} was not written"
    data = delta.to_pyarrow_table()
    return sorted(data.to_pylist(), key=lambda row: json.dumps(row, sort_keys=True, default=str))


def test_one_epoch_or_many_land_the_same_rows(
    case: SourceCase, tmp_path: Path, settings: Settings
) -> None:
    """Bytewax's 1-versus-N check: how the runner cuts epochs does not change the output."""
    config = case.config(40, 0, 0)
    whole = run_pipeline(case, config, 0, tmp_path, name="whole")
    pieces = run_pipeline(case, config, 0, tmp_path, name="pieces", max_rows=7)
    assert whole.events_out == pieces.events_out == 40
    assert pieces.epochs > whole.epochs
    assert lake_rows(settings, "pieces") == lake_rows(settings, "whole")


def test_a_second_run_resumes_after_the_first_runs_checkpoint(
    case: SourceCase, tmp_path: Path
) -> None:
    config = case.config(20, 0, 0)
    assert run_pipeline(case, config, 0, tmp_path).events_out == 20
    again = run_pipeline(case, config, 0, tmp_path)
    assert (again.events_in, again.events_out) == (0, 0)
    if case.grows:
        more = run_pipeline(case, case.config(5, 0, 20), 0, tmp_path)
        assert (more.events_in, more.events_out) == (5, 5)


def test_all_bad_rows_are_dead_lettered_with_a_reason_and_the_run_goes_on(
    case: SourceCase, tmp_path: Path, settings: Settings
) -> None:
    config = case.config(0, 6, 0)
    stats = run_pipeline(case, config, 6, tmp_path)
    assert (stats.events_in, stats.dead_lettered, stats.events_out) == (6, 6, 0)
    dead = read_dead_letters(settings, PIPELINE, limit=None)
    assert dead.num_rows == 6
    assert all(dead.column("reason").to_pylist())
    assert run_pipeline(case, config, 6, tmp_path).events_in == 0  # the checkpoint moved on
    if case.grows:
        more = run_pipeline(case, case.config(3, 0, 0), 6, tmp_path)
        assert (more.events_in, more.events_out) == (3, 3)


def test_a_run_with_nothing_to_read_ends_cleanly(case: SourceCase, tmp_path: Path) -> None:
    stats = run_pipeline(case, case.config(0, 0, 0), 0, tmp_path)
    assert (stats.events_in, stats.events_out, stats.dead_lettered) == (0, 0, 0)
