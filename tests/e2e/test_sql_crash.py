"""SIGKILL `sluice run` on a PostgreSQL table twice, append rows, rerun: each row lands once."""

from __future__ import annotations

from pathlib import Path

from deltalake import DeltaTable

from tests.postgres import SERVER, create_readings, insert_readings, temporary_database
from tests.processes import committed_epoch, kill_when, start_run

PIPELINE = """\
name: sqlcrash
source: {{type: sql, url: "{url}", table: readings, cursor: id, batch_rows: 20000}}
schema: {{id: long, device_id: string, ts: timestamp, temperature: double}}
event_time: ts
batch: {{max_rows: 20000}}
sinks:
  - {{type: lake, table: sqlcrash, partition_by: none}}
  - {{type: warehouse, table: sqlcrash}}
"""


def test_sigkill_mid_load_then_appended_rows_land_exactly_once(tmp_path: Path) -> None:
    with temporary_database("sqlcrash") as name:
        url = f"{SERVER}/{name}"
        create_readings(url)
        insert_readings(url, 1, 400_000)
        home = tmp_path / "home"
        pipeline = tmp_path / "sqlcrash.yaml"
        pipeline.write_text(PIPELINE.format(url=url))

        kill_when(start_run(pipeline, home), lambda: committed_epoch(home, "sqlcrash") >= 2)
        first_kill = committed_epoch(home, "sqlcrash")
        kill_when(
            start_run(pipeline, home),
            lambda: committed_epoch(home, "sqlcrash") >= first_kill + 3,
        )
        assert committed_epoch(home, "sqlcrash") < 20, "the load finished before the kill"
        done = start_run(pipeline, home)
        _, err = done.communicate(timeout=300)
        assert done.returncode == 0, err.decode()
        insert_readings(url, 400_001, 430_000)
        again = start_run(pipeline, home)
        _, err = again.communicate(timeout=300)
        assert again.returncode == 0, err.decode()

    lake = DeltaTable(str(home / "lake" / "sqlcrash")).to_pyarrow_table(columns=["id"])
    ids = lake.column("id").to_numpy()
    assert len(ids) == 430_000
    assert sorted(set(ids.tolist())) == list(range(1, 430_001))

    import duckdb

    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    count, distinct = con.execute("select count(*), count(distinct id) from sqlcrash").fetchone()
    assert (count, distinct) == (430_000, 430_000)
