"""Every runner lands the same rows: ``--runner local``, ``--runner spark`` and ``--runner beam``.

One pipeline (filter, derive, a one-minute window ``into`` a table, lake and warehouse sinks)
over the same generated input must give identical lake rows, window rows (counts and sums to
the bit), warehouse rows and actions outbox on every runner; with ``online_anomaly`` added,
every model column is identical too. A finished Spark job run again adds nothing, and a Spark
task that fails once is retried without duplicating a row.

Small data and one Spark session for the whole module keep this to a few minutes; the 200k
comparison is ``benchmarks/runners.py``.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pytest
import yaml
from deltalake import DeltaTable

from sluice.actions.outbox import unpack_messages
from sluice.config.loader import load_pipeline
from sluice.core import plugins
from sluice.core.settings import Settings
from sluice.runners.create import run
from tests.runner_envs import PLUGINS, beam_python, run_cli, spark_session

EVENTS = 6_000
SOURCE = {"type": "generator", "events": EVENTS, "devices": 12, "seed": 11}
WINDOWED: dict[str, Any] = {
    "name": "conform",
    "source": {"type": "file", "path": "events.jsonl", "format": "json"},
    "schema": {
        "device_id": "string",
        "ts": "timestamp",
        "temperature": "double",
        "pressure": "double",
        "status": "string",
    },
    "event_time": "ts",
    "batch": {"max_rows": 700, "max_latency": "60s"},  # blocks the window's lateness refers to
    "transforms": [
        {"filter": "status <> 'maintenance'"},
        {"derive": {"temp_c": "(temperature - 32) * 5 / 9"}},
        {"enrich": {"path": "devices.csv", "on": "device_id"}},
        {
            "window": {
                "key": "device_id",
                "size": "1m",
                "allowed_lateness": "10s",
                "aggregate": {"n": "count(*)", "temp_sum": "sum(temp_c)"},
                "into": "conform_1m",
            }
        },
    ],
    "actions": [{"name": "hot", "when": "temp_c > 30", "type": "log"}],
    "sinks": [{"type": "lake", "table": "conform"}, {"type": "warehouse", "table": "conform"}],
}
MODEL = {"name": "temp", "type": "online_anomaly", "features": ["temp_c", "pressure"]}
SCORED: dict[str, Any] = {
    "name": "scored",
    "source": SOURCE,  # 12 keys: enough for the detector's global-regime muting
    "event_time": "ts",
    "transforms": [
        {"filter": "status <> 'maintenance'"},
        {"derive": {"temp_c": "(temperature - 32) * 5 / 9"}},
    ],
    "models": [{**MODEL, "key": "device_id"}],
    "sinks": [{"type": "lake", "table": "scored"}],
}


def write_input(folder: Path) -> None:
    """Out-of-order JSON-lines telemetry (some rows late, some bad) and a device lookup."""
    rng = np.random.default_rng(5)
    seconds = 1_767_225_600 + np.arange(EVENTS) * 0.5 + rng.uniform(-25, 5, EVENTS)
    seconds -= np.where(rng.random(EVENTS) < 0.03, rng.uniform(300, 900, EVENTS), 0.0)  # stragglers
    lines = []
    for i, second in enumerate(seconds):
        ts = np.datetime64(int(second * 1000), "ms").astype(str) + "Z"
        status = "maintenance" if i % 50 == 7 else "ok"
        record = (
            f'{{"device_id": "d{i % 8}", "ts": "{ts}", "temperature": {rng.normal(80, 10):.3f}, '
            f'"pressure": {rng.normal(1.0, 0.1):.4f}, "status": "{status}"}}'
        )
        lines.append(record if i % 997 else '{"device_id": "d1", "ts": "not a time"}')
    (folder / "events.jsonl").write_text("\n".join(lines) + "\n")
    sites = "\n".join(f"d{k},site-{k % 3}" for k in range(8))
    (folder / "devices.csv").write_text("device_id,site\n" + sites + "\n")


def write(tmp: Path, spec: dict[str, Any]) -> Path:
    """``spec`` as a pipeline file in ``tmp``."""
    path = tmp / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def lake(home: Path, table: str, order: list[str]) -> pa.Table:
    """A lake table's rows in a stable order."""
    rows = DeltaTable(str(home / "lake" / table)).to_pyarrow_table()
    return rows.sort_by([(c, "ascending") for c in order])


def warehouse(home: Path, table: str) -> pa.Table:
    """A warehouse table's rows in a stable order."""
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    try:
        return con.sql(f"SELECT * FROM {table} ORDER BY ts, device_id").to_arrow_table()
    finally:
        con.close()


def run_local(path: Path, home: Path) -> None:
    """The pipeline file at ``path`` on the local runner."""
    run(load_pipeline(path), Settings(home=home), until_idle=True, idle_timeout=1.0)


def run_spark(path: Path, home: Path) -> Any:
    """The pipeline file at ``path`` on the Spark runner (the module's session)."""
    from sluice.runners.spark import SparkRunner

    return SparkRunner(load_pipeline(path), Settings(home=home), idle_timeout=1.0).run()


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    """One local Spark session for the module."""
    session = spark_session()
    yield session
    session.stop()


@pytest.fixture(scope="module")
def windowed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The windowed pipeline's file and its local run's home."""
    tmp = tmp_path_factory.mktemp("windowed")
    write_input(tmp)
    source = {**WINDOWED["source"], "path": str(tmp / "events.jsonl")}
    enrich = {"enrich": {"path": str(tmp / "devices.csv"), "on": "device_id"}}
    transforms = [*WINDOWED["transforms"][:2], enrich, *WINDOWED["transforms"][3:]]
    path = write(tmp, {**WINDOWED, "source": source, "transforms": transforms})
    run_local(path, tmp / "local")
    return path, tmp / "local"


def outbox(home: Path) -> list[str]:
    """The actions the run put in the outbox, sorted, without their epoch (a batch run has one)."""
    con = sqlite3.connect(home / "metadata.db")
    try:
        batches = con.execute("SELECT messages FROM action_batches ORDER BY id").fetchall()
    finally:
        con.close()
    payloads = [json.loads(line) for (blob,) in batches for line in unpack_messages(blob)]
    for payload in payloads:
        del payload["payload"]["epoch"]
    return sorted(json.dumps(p, sort_keys=True) for p in payloads)


def dead_letters(home: Path) -> pa.Table:
    """The dead letters, without the run-specific epoch and time, in a stable order."""
    rows = DeltaTable(str(home / "lake" / "dead_letter")).to_pyarrow_table()
    rows = rows.select(["stage", "reason", "raw", "origin"])
    return rows.sort_by([(c, "ascending") for c in rows.column_names])


def assert_same_windowed(home: Path, local: Path) -> None:
    """Identical lake rows, window rows, warehouse rows, dead letters and actions outbox."""
    events = lake(local, "conform", ["ts", "device_id"])
    windows = lake(local, "conform_1m", ["window_start", "device_id"])
    assert events.num_rows > EVENTS * 0.9 and windows.num_rows > 100
    assert "site" in events.column_names
    rejected = dead_letters(local)
    stages = set(rejected.column("stage").to_pylist())
    assert {"window", "decode"} <= stages, stages  # late rows and bad records were there
    assert dead_letters(home).equals(rejected)
    assert lake(home, "conform", ["ts", "device_id"]).equals(events)
    assert lake(home, "conform_1m", ["window_start", "device_id"]).equals(windows)
    assert warehouse(home, "conform").equals(warehouse(local, "conform"))
    actions = outbox(local)
    assert len(actions) > 10 and outbox(home) == actions


def test_spark_lands_what_local_lands(
    spark: Any, windowed: tuple[Path, Path], tmp_path: Path
) -> None:
    """Events, window counts and window sums on Spark equal the local runner's."""
    path, local = windowed
    run_spark(path, tmp_path)
    assert_same_windowed(tmp_path, local)


def test_a_finished_spark_job_run_again_adds_nothing(
    spark: Any, windowed: tuple[Path, Path], tmp_path: Path
) -> None:
    """The second run finds the input committed: no new row anywhere."""
    path, local = windowed
    run_spark(path, tmp_path)
    stats = run_spark(path, tmp_path)
    assert stats.events_in == 0 and stats.epochs == 0
    assert_same_windowed(tmp_path, local)
    history = DeltaTable(str(tmp_path / "lake" / "conform")).history()
    assert len([h for h in history if h.get("operation") == "WRITE"]) == 1


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pa.Table]:
    """The scoring pipeline's file and the rows its local run lands."""
    tmp = tmp_path_factory.mktemp("scored")
    path = write(tmp, SCORED)
    run_local(path, tmp / "local")
    rows = lake(tmp / "local", "scored", ["ts", "device_id"])
    assert rows.num_rows > EVENTS * 0.9 and np.asarray(rows.column("temp_anomaly")).any()
    return path, rows


def test_spark_model_columns_equal_local(
    spark: Any, scored: tuple[Path, pa.Table], tmp_path: Path
) -> None:
    """``online_anomaly`` on Spark: every model column equals the local runner's, to the bit."""
    path, want = scored
    run_spark(path, tmp_path)
    assert lake(tmp_path, "scored", ["ts", "device_id"]).equals(want)


@pytest.fixture
def fail_once_plugin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The ``fail_once`` model type registered (entry point) for this test only."""
    monkeypatch.syspath_prepend(str(PLUGINS))
    plugins._entry_points.cache_clear()
    yield
    monkeypatch.undo()
    plugins._entry_points.cache_clear()


def test_a_spark_task_that_fails_once_is_retried_without_duplicates(
    spark: Any, fail_once_plugin: None, tmp_path: Path
) -> None:
    """The first scoring task raises; Spark retries it; every row lands exactly once."""
    marker = tmp_path / "failed-once"
    spec = {
        "name": "retried",
        "source": SOURCE,
        "event_time": "ts",
        "models": [
            {"name": "m", "type": "fail_once", "features": ["temperature"], "marker": str(marker)}
        ],
        "sinks": [{"type": "lake", "table": "retried"}],
    }
    run_spark(write(tmp_path, spec), tmp_path / "home")
    assert marker.exists()  # a task really failed
    landed = DeltaTable(str(tmp_path / "home" / "lake" / "retried")).to_pyarrow_table()
    assert landed.num_rows == EVENTS
    assert len(set(landed.column("ts").to_pylist())) == landed.num_rows


@pytest.fixture(scope="module")
def beam() -> Path:
    """The Python of the Beam environment (built on first use; CI must have it)."""
    try:
        return beam_python()
    except Exception as exc:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"cannot build the Beam environment: {exc}")


@pytest.mark.timeout(1500)  # the first use builds the Beam environment
def test_beam_lands_what_local_lands(
    beam: Path, windowed: tuple[Path, Path], tmp_path: Path
) -> None:
    """The same file on the Beam DirectRunner lands the local runner's rows."""
    path, local = windowed
    done = run_cli(beam, tmp_path, "run", str(path), "--runner", "beam", "-q")
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_windowed(tmp_path, local)


def test_beam_model_columns_equal_local(
    beam: Path, scored: tuple[Path, pa.Table], tmp_path: Path
) -> None:
    """``online_anomaly`` on Beam: every model column equals the local runner's, to the bit."""
    path, want = scored
    done = run_cli(beam, tmp_path, "run", str(path), "--runner", "beam", "-q")
    assert done.returncode == 0, done.stderr[-3000:]
    assert lake(tmp_path, "scored", ["ts", "device_id"]).equals(want)
