"""Two `sluice run` replicas in one consumer group; one is SIGKILLed (real tansu broker).

The survivor takes over the killed replica's partitions with their checkpointed state, so
the lake ends with every event exactly once and the per-device window aggregates equal
those of a single-replica run over the same topic.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from sluice.connectors.kafka import produce_file
from tests.kafka_broker import kafka_broker_fixture, new_topic  # noqa: F401

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(420)]
N_EVENTS = 40_000
PARTITIONS = 4

PIPELINE = """\
name: replicated
source: {{type: kafka, topic: {topic}, bootstrap_servers: "{bootstrap}", keyed_by: device_id}}
schema: {{device_id: string, ts: timestamp, temperature: double, pressure: double,
          vibration: double, status: string}}
event_time: ts
batch: {{max_rows: 1000, max_latency: 200ms}}
transforms:
  - window: {{key: device_id, size: 1m, aggregate: {{n: "count(*)", temp_mean: "avg(temperature)"}},
             into: replicated_1m}}
models:
  - {{name: temp_anomaly, type: online_anomaly, features: [temperature, pressure], key: device_id}}
sinks:
  - {{type: lake, table: replicated}}
"""


def _replica(pipeline: Path, home: Path, group: str, log: Path, idle: float) -> subprocess.Popen:
    env = {**os.environ, "SLUICE_HOME": str(home), "SLUICE_LOG_LEVEL": "INFO"}
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "sluice.cli", "run", str(pipeline), "--until-idle"),
            *("--idle-timeout", str(idle), "--group", group, "--quiet"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )


def _held(log: Path, since: int = 0) -> set[str]:
    """Partitions a replica holds, from its assigned/revoking log lines after ``since``."""
    held: set[str] = set()
    for line in log.read_text(errors="replace")[since:].splitlines():
        match = re.search(r"(assigned|revoking) (.+)$", line)
        if match:
            keys = set(match.group(2).split(", "))
            held = held | keys if match.group(1) == "assigned" else held - keys
    return held


def _epochs(home: Path, keys: set[str]) -> int:
    try:
        with sqlite3.connect(home / "metadata.db", timeout=5) as conn:
            rows = conn.execute("select pipeline, epoch from checkpoints").fetchall()
    except sqlite3.OperationalError:
        return 0
    return sum(epoch for stream, epoch in rows if stream.split("#", 1)[-1] in keys)


def _wait(condition, what: str, timeout: float = 90) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _windows(home: Path) -> pa.Table:
    from deltalake import DeltaTable

    con = duckdb.connect()
    con.register("windows", DeltaTable(str(home / "lake" / "replicated_1m")).to_pyarrow_table())
    return con.sql(
        "select device_id, window_start, n, round(temp_mean, 9) as t from windows "
        "order by device_id, window_start"
    ).to_arrow_table()


def test_killed_replica_hands_its_partitions_over(kafka_broker: str, tmp_path: Path) -> None:
    from deltalake import DeltaTable

    from sluice.sources import synthetic

    events = tmp_path / "events.jsonl"
    synthetic.write_jsonl(synthetic.telemetry(N_EVENTS, n_devices=16, seed=11), events)
    topic = new_topic(kafka_broker, partitions=PARTITIONS)
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(PIPELINE.format(topic=topic, bootstrap=kafka_broker))
    home, group = tmp_path / "home", f"g-{uuid.uuid4().hex[:8]}"
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"

    a = _replica(pipeline, home, group, log_a, idle=25)
    _wait(lambda: len(_held(log_a)) == PARTITIONS, "replica A to hold every partition")
    b = _replica(pipeline, home, group, log_b, idle=25)
    try:
        _wait(lambda: _held(log_b) and len(_held(log_a)) < PARTITIONS, "the group to split")
        assert produce_file(kafka_broker, topic, events, key="device_id") == N_EVENTS
        b_keys = _held(log_b)
        _wait(lambda: _epochs(home, b_keys) >= 3, "replica B to commit epochs")
        assert b.poll() is None, "replica B finished before it could be killed"
        b.send_signal(signal.SIGKILL)
        b.wait(timeout=30)
        killed_at = len(log_a.read_text(errors="replace"))
        _wait(lambda: _held(log_a, killed_at) >= b_keys, "replica A to take B's partitions")
        assert a.wait(timeout=240) == 0, log_a.read_text()[-3000:]
    finally:
        for proc in (a, b):
            if proc.poll() is None:
                proc.kill()
    con = duckdb.connect()
    con.register(
        "lake",
        DeltaTable(str(home / "lake" / "replicated")).to_pyarrow_table(columns=["device_id", "ts"]),
    )
    got = con.execute("select count(*), count(distinct (device_id, ts)) from lake").fetchall()[0]
    assert got == (N_EVENTS, N_EVENTS)

    single_home = tmp_path / "single"
    single = _replica(pipeline, single_home, f"s-{uuid.uuid4().hex[:8]}", tmp_path / "s.log", 8)
    assert single.wait(timeout=240) == 0, (tmp_path / "s.log").read_text()[-3000:]
    expected = _windows(single_home)
    assert expected.num_rows > 0
    assert _windows(home).equals(expected)

    status = subprocess.run(
        [sys.executable, "-m", "sluice.cli", "pipelines", "status", str(pipeline)],
        env={**os.environ, "SLUICE_HOME": str(home), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "replicated" in status
    for partition in range(PARTITIONS):
        assert f"{topic}/{partition}" in status

    _predict_uses_every_partition(home)


def _predict_uses_every_partition(home: Path) -> None:
    """Predict scores each device with the state of the partition task that learned it."""
    from sluice.core.settings import Settings
    from sluice.models.partition_states import PartitionStates
    from sluice.models.predict import Predictor

    predictor = Predictor(Settings(home=home))
    devices = [f"dev-{i:04d}" for i in range(16)]
    for device in devices:  # one at a time: all devices jumping together is a regime change
        answer = predictor.predict({"device_id": device, "temperature": 1e6, "pressure": 1013.0})
        assert answer["model"] == "temp_anomaly" and answer["version"] >= 1
        assert answer["prediction"]["anomaly"], answer
    states = predictor._load("temp_anomaly").model.detector  # type: ignore[attr-defined]
    assert isinstance(states, PartitionStates)
    assert len(states.detectors) == PARTITIONS and states.n_keys == len(devices)
    owners = states.owners(np.array(devices, dtype=object), len(devices))
    assert sorted(set(owners.tolist())) == list(range(PARTITIONS))
