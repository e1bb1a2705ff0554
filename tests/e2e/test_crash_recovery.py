"""SIGKILL `sluice run --until-idle` mid-run, rerun it: every event lands exactly once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from tests.processes import kill_when

N_EVENTS = 240_000

PIPELINE = """\
name: crashy
source: {{type: file, path: "{data}", format: json, chunk_bytes: 1048576}}
schema: {{device_id: string, ts: timestamp, temperature: double, pressure: double,
          vibration: double, status: string}}
event_time: ts
batch: {{max_rows: 8000}}
transforms:
  - filter: "status <> 'maintenance'"
  - derive: {{temp_c: "(temperature - 32) * 5 / 9"}}
  - window: {{key: device_id, size: 1m, aggregate: {{temp_mean: "avg(temp_c)", n: "count(*)"}},
             into: crashy_1m}}
sinks:
  - {{type: lake, table: crashy}}
  - {{type: warehouse, table: crashy}}
"""


@pytest.fixture(scope="module")
def events_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A JSON-lines file of generated telemetry."""
    from sluice.sources import synthetic

    path = tmp_path_factory.mktemp("data") / "events.jsonl"
    synthetic.write_jsonl(synthetic.telemetry(N_EVENTS, n_devices=40, seed=3), path)
    return path


def _committed_epoch(home: Path) -> int:
    db = home / "metadata.db"
    if not db.exists():
        return 0
    import sqlite3

    try:
        with sqlite3.connect(db, timeout=5) as conn:
            row = conn.execute("select epoch from checkpoints where pipeline='crashy'").fetchone()
    except sqlite3.OperationalError:
        return 0
    return int(row[0]) if row else 0


def _start(pipeline: Path, home: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SLUICE_HOME": str(home)}
    return subprocess.Popen(
        [sys.executable, "-m", "sluice.cli", "run", str(pipeline), "--until-idle", "--quiet"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _kill_after_epoch(pipeline: Path, home: Path, epoch: int) -> None:
    kill_when(_start(pipeline, home), lambda: _committed_epoch(home) >= epoch)


def test_sigkill_mid_run_loses_and_duplicates_nothing(events_file: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    pipeline = tmp_path / "crashy.yaml"
    pipeline.write_text(PIPELINE.format(data=events_file))
    _kill_after_epoch(pipeline, home, 3)
    first_kill = _committed_epoch(home)
    _kill_after_epoch(pipeline, home, first_kill + 5)
    proc = _start(pipeline, home)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()

    con = duckdb.connect()
    expected = con.execute(
        f"select count(*) from read_json('{events_file}', format='newline_delimited') "
        "where status <> 'maintenance'"
    ).fetchall()[0][0]
    assert expected > 100_000

    from deltalake import DeltaTable

    lake = DeltaTable(str(home / "lake" / "crashy")).to_pyarrow_table(columns=["device_id", "ts"])
    con.register("lake", lake)
    lake_n, lake_distinct = con.execute(
        "select count(*), count(distinct (device_id, ts)) from lake"
    ).fetchall()[0]
    assert (lake_n, lake_distinct) == (expected, expected)

    con.execute(f"attach '{home / 'warehouse.duckdb'}' as wh (read_only)").fetchall()
    wh_n, wh_distinct = con.execute(
        "select count(*), count(distinct (device_id, ts)) from wh.crashy"
    ).fetchall()[0]
    assert (wh_n, wh_distinct) == (expected, expected)

    windows = DeltaTable(str(home / "lake" / "crashy_1m")).to_pyarrow_table()
    con.register("windows", windows)
    got = con.execute("select device_id, window_start, n from windows order by all").fetchall()
    want = con.execute(
        f"select device_id, time_bucket(interval 1 minute, ts::timestamptz) w, count(*) "
        f"from read_json('{events_file}', format='newline_delimited', "
        "columns={device_id: 'VARCHAR', ts: 'TIMESTAMPTZ', status: 'VARCHAR'}) "
        "where status <> 'maintenance' group by all order by all"
    ).fetchall()
    assert len(got) == len(want)
    assert [(d, n) for d, _, n in got] == [(d, n) for d, _, n in want]
