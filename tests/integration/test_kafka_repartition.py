"""`repartition: {key: ...}` routes an unkeyed topic through `<pipeline>-repartition`."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import duckdb
import pytest

from sluice.connectors.kafka import produce_file
from tests.kafka_broker import kafka_broker_fixture, new_topic  # noqa: F401
from tests.processes import sluice_command

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]
N_EVENTS = 12_000

PIPELINE = """\
name: {name}
source: {{type: kafka, topic: {topic}, bootstrap_servers: "{bootstrap}",
          repartition: {{key: device_id, partitions: 3}}, include: [partition]}}
schema: {{device_id: string, ts: timestamp, temperature: double}}
event_time: ts
batch: {{max_rows: 2000}}
transforms:
  - window: {{key: device_id, size: 1m, aggregate: {{n: "count(*)"}}, into: {name}_1m,
             allowed_lateness: 30d}}
sinks:
  - {{type: lake, table: {name}}}
"""


def test_unkeyed_topic_is_repartitioned_by_device(kafka_broker: str, tmp_path: Path) -> None:
    from deltalake import DeltaTable

    from sluice.sources import synthetic

    events = tmp_path / "events.jsonl"
    synthetic.write_jsonl(synthetic.telemetry(N_EVENTS, n_devices=12, seed=3), events)
    topic = new_topic(kafka_broker, partitions=2)
    assert produce_file(kafka_broker, topic, events) == N_EVENTS  # no key: spread anyhow
    name = f"rp{topic[-6:]}"
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(PIPELINE.format(name=name, topic=topic, bootstrap=kafka_broker))
    home = tmp_path / "home"
    done = subprocess.run(
        sluice_command("run", str(pipeline), "--until-idle", "--idle-timeout", "5", "--quiet"),
        env={**os.environ, "SLUICE_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    con = duckdb.connect()
    con.register("lake", DeltaTable(str(home / "lake" / name)).to_pyarrow_table())
    con.register("windows", DeltaTable(str(home / "lake" / f"{name}_1m")).to_pyarrow_table())
    got = con.execute("select count(*), count(distinct (device_id, ts)) from lake").fetchall()
    assert got == [(N_EVENTS, N_EVENTS)]
    # every device was read from exactly one partition of the repartition topic
    spread = con.execute(
        "select max(n) from (select device_id, count(distinct _partition) as n "
        "from lake group by device_id)"
    ).fetchall()
    assert spread == [(1,)]
    expected = con.execute(
        f"select device_id, time_bucket(interval 1 minute, ts) as w, count(*) as n "
        f"from read_json('{events}', format='newline_delimited') group by all order by all"
    ).fetchall()
    windows = con.execute("select device_id, window_start, n from windows order by all").fetchall()
    assert [(d, n) for d, _, n in windows] == [(d, n) for d, _, n in expected]
