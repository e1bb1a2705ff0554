"""Keyed state over an unkeyed multi-partition topic is refused; `sluice produce` aliases.

A plain console producer sends records without a key, so one device's records spread over
every partition and per-device windows computed per partition task are wrong. `sluice run`
refuses such a pipeline before reading, naming the fix (``repartition`` or ``keyed_by``).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from deltalake import DeltaTable

from sluice.sources import synthetic
from tests.kafka_broker import kafka_broker_fixture, new_topic  # noqa: F401
from tests.processes import sluice_command

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]
N_EVENTS = 600

PIPELINE = """\
name: {name}
source: {{type: kafka, topic: {topic}, bootstrap_servers: "{bootstrap}"{extra}}}
schema: {{device_id: string, ts: timestamp, temperature: double}}
event_time: ts
transforms:
  - window: {{key: device_id, size: 1m, aggregate: {{n: "count(*)"}}, into: {name}_1m,
             allowed_lateness: 30d}}
sinks:
  - {{type: lake, table: {name}}}
"""


def sluice(home: Path, *args: str, stdin: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the ``sluice`` command line with its own home."""
    with stdin.open("rb") if stdin else open(os.devnull, "rb") as stream:
        return subprocess.run(
            sluice_command(*args),
            env={**os.environ, "SLUICE_HOME": str(home)},
            stdin=stream,
            capture_output=True,
            timeout=240,
        )  # type: ignore[call-overload, no-any-return]


def produce(home: Path, flag: str, bootstrap: str, topic: str, events: Path, *key: str) -> None:
    """``sluice produce`` reading stdin, as ``kafka-console-producer < events`` would."""
    done = sluice(home, "produce", topic, "-", flag, bootstrap, *key, stdin=events)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"produced {N_EVENTS:,} record(s)" in done.stdout.decode()


def pipeline_file(tmp_path: Path, name: str, topic: str, bootstrap: str, extra: str = "") -> Path:
    """A per-device window pipeline over ``topic``."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(PIPELINE.format(name=name, topic=topic, bootstrap=bootstrap, extra=extra))
    return path


@pytest.fixture
def events(tmp_path: Path) -> Path:
    """A JSON-lines file of telemetry from 6 devices."""
    path = tmp_path / "events.jsonl"
    synthetic.write_jsonl(synthetic.telemetry(N_EVENTS, n_devices=6, seed=5), path)
    return path


def run(home: Path, pipeline: Path) -> subprocess.CompletedProcess[str]:
    """``sluice run --until-idle``."""
    return sluice(home, "run", str(pipeline), "--until-idle", "--idle-timeout", "3", "--quiet")


def test_keyed_windows_over_an_unkeyed_topic_are_refused_with_the_fix(
    kafka_broker: str, tmp_path: Path, events: Path
) -> None:
    topic = new_topic(kafka_broker, partitions=2)
    home = tmp_path / "home"
    produce(home, "--broker-list", kafka_broker, topic, events)  # no key, like the console
    pipeline = pipeline_file(tmp_path, "unkeyed", topic, kafka_broker)
    done = run(home, pipeline)
    assert done.returncode != 0
    error = done.stderr.decode()
    assert f"{pipeline}:2: source: transforms[0].window keeps state per device_id" in error
    assert "2 partitions" in error
    assert "repartition: {key: device_id}" in error and "keyed_by: device_id" in error
    assert not (home / "lake" / "unkeyed").exists()  # refused before anything was written


def test_a_declared_key_guarantee_runs_and_windows_are_right(
    kafka_broker: str, tmp_path: Path, events: Path
) -> None:
    import duckdb

    topic = new_topic(kafka_broker, partitions=2)
    home = tmp_path / "home"
    produce(home, "--bootstrap-server", kafka_broker, topic, events, "--key", "device_id")
    pipeline = pipeline_file(tmp_path, "keyed", topic, kafka_broker, ", keyed_by: device_id")
    done = run(home, pipeline)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    con = duckdb.connect()
    con.register("w", DeltaTable(str(home / "lake" / "keyed_1m")).to_pyarrow_table())
    got = con.execute("select device_id, window_start, n from w order by all").fetchall()
    expected = con.execute(
        "select device_id, time_bucket(interval 1 minute, ts) as w, count(*) as n "
        f"from read_json('{events}', format='newline_delimited') group by all order by all"
    ).fetchall()
    assert [(d, n) for d, _, n in got] == [(d, n) for d, _, n in expected]


def test_a_key_guarantee_on_another_field_is_refused(
    kafka_broker: str, tmp_path: Path, events: Path
) -> None:
    topic = new_topic(kafka_broker, partitions=2)
    pipeline = pipeline_file(tmp_path, "other", topic, kafka_broker, ", keyed_by: status")
    done = run(tmp_path / "home", pipeline)
    assert done.returncode != 0
    assert "not known to be keyed by device_id" in done.stderr.decode()


def test_one_partition_needs_no_key(kafka_broker: str, tmp_path: Path, events: Path) -> None:
    topic = new_topic(kafka_broker, partitions=1)
    home = tmp_path / "home"
    produce(home, "-b", kafka_broker, topic, events)
    done = run(home, pipeline_file(tmp_path, "single", topic, kafka_broker))
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    assert DeltaTable(str(home / "lake" / "single")).to_pyarrow_table().num_rows == N_EVENTS
