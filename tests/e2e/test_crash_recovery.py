"""SIGKILL `sluice run --until-idle` mid-run, rerun it: every event lands exactly once."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from tests.processes import committed_epoch, kill_when, start_run

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


def _kill_after_epoch(pipeline: Path, home: Path, epoch: int) -> None:
    kill_when(start_run(pipeline, home), lambda: committed_epoch(home, "crashy") >= epoch)


def test_sigkill_mid_run_loses_and_duplicates_nothing(events_file: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    pipeline = tmp_path / "crashy.yaml"
    pipeline.write_text(PIPELINE.format(data=events_file))
    _kill_after_epoch(pipeline, home, 3)
    first_kill = committed_epoch(home, "crashy")
    _kill_after_epoch(pipeline, home, first_kill + 5)
    proc = start_run(pipeline, home)
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
