"""`sluice run` on a Kafka topic: SIGKILL mid-run and poison messages (real tansu broker)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

import duckdb
import pytest

from sluice.connectors.kafka import produce_file, produce_records
from tests.kafka_broker import kafka_broker_fixture, new_topic  # noqa: F401
from tests.processes import kill_when, sluice_command

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]
N_EVENTS = 60_000

PIPELINE = """\
name: kafkacrash
source: {{type: kafka, topic: {topic}, bootstrap_servers: "{bootstrap}"}}
schema: {{device_id: string, ts: timestamp, temperature: double, pressure: double,
          vibration: double, status: string}}
event_time: ts
batch: {{max_rows: 4000}}
transforms:
  - filter: "status <> 'maintenance'"
sinks:
  - {{type: lake, table: kafkacrash}}
"""
POISON = [
    (b"not json", None),
    (b'{"device_id": "\xff"}', None),
    (b'{"device_id": "x", "ts": "not a time"}', None),
]


def _committed_epoch(home: Path) -> int:
    try:
        with sqlite3.connect(home / "metadata.db", timeout=5) as conn:
            row = conn.execute(
                "select sum(epoch) from checkpoints where pipeline like 'kafkacrash#%'"
            ).fetchone()
    except sqlite3.OperationalError:
        return 0
    return int(row[0]) if row and row[0] is not None else 0


def _start(pipeline: Path, home: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SLUICE_HOME": str(home)}
    return subprocess.Popen(
        sluice_command("run", str(pipeline), "--until-idle", "--idle-timeout", "3", "--quiet"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _kill_after_epoch(pipeline: Path, home: Path, epoch: int) -> None:
    kill_when(_start(pipeline, home), lambda: _committed_epoch(home) >= epoch)


def test_sigkill_mid_run_loses_and_duplicates_nothing(kafka_broker: str, tmp_path: Path) -> None:
    from deltalake import DeltaTable

    from sluice.sources import synthetic

    events = tmp_path / "events.jsonl"
    synthetic.write_jsonl(synthetic.telemetry(N_EVENTS, n_devices=20, seed=5), events)
    topic = new_topic(kafka_broker, partitions=3)
    assert produce_file(kafka_broker, topic, events, key="device_id") == N_EVENTS
    produce_records(kafka_broker, topic, POISON)
    home, pipeline = tmp_path / "home", tmp_path / "p.yaml"
    pipeline.write_text(PIPELINE.format(topic=topic, bootstrap=kafka_broker))

    _kill_after_epoch(pipeline, home, 2)
    _kill_after_epoch(pipeline, home, _committed_epoch(home) + 3)
    proc = _start(pipeline, home)
    _out, err = proc.communicate(timeout=200)
    assert proc.returncode == 0, err.decode()

    con = duckdb.connect()
    expected = con.execute(
        f"select count(*) from read_json('{events}', "
        "format='newline_delimited') where status <> 'maintenance'"
    ).fetchall()[0][0]
    lake = DeltaTable(str(home / "lake" / "kafkacrash")).to_pyarrow_table(
        columns=["device_id", "ts"]
    )
    con.register("lake", lake)
    got = con.execute("select count(*), count(distinct (device_id, ts)) from lake").fetchall()[0]
    assert got == (expected, expected)
    dead = DeltaTable(str(home / "lake" / "dead_letter")).to_pyarrow_table()
    assert sorted(dead["reason"].to_pylist()) == [
        "field 'ts': not a timestamp: \"not a time\"",
        "invalid UTF-8",
        "malformed JSON",
    ]
    assert all(o.startswith(f"{topic}/") and "@" in o for o in dead["origin"].to_pylist())
