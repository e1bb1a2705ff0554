"""`sluice run` on a Kafka topic through infrastructure faults: a broker restart mid-run and a
PostgreSQL warehouse outage. Real tansu broker, real PostgreSQL, a real `sluice run` process.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from sluice.connectors.kafka import produce_file
from sluice.sources import synthetic
from tests.integration.test_kafka_reliability import _start
from tests.kafka_broker import TansuBroker, new_topic
from tests.postgres import ADMIN_URL, temporary_database

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]
N_EVENTS = 60_000  # in the topic before the run starts
N_TAIL = 6_000  # produced once the fault is under way, so the run must outlive it
TOTAL = N_EVENTS + N_TAIL
PARTITIONS = 4
OUTAGE_S = 8.0  # longer than the consumer's 6 s session timeout: the group is rejoined

SCHEMA = """\
schema: {device_id: string, ts: timestamp, temperature: double, pressure: double,
         vibration: double, status: string}
event_time: ts
batch: {max_rows: 2000}
"""
# Small fetches: most records are still on the broker, not in the client queue, when it dies.
RESTART_PIPELINE = """\
name: kafkarestart
source:
  type: kafka
  topic: {topic}
  bootstrap_servers: "{bootstrap}"
  consumer: {{fetch.max.bytes: 65536, message.max.bytes: 65536,
             max.partition.fetch.bytes: 16384, queued.max.messages.kbytes: 64}}
{schema}sinks:
  - {{type: lake, table: kafkarestart}}
"""
OUTAGE_PIPELINE = """\
name: pgoutage
source: {{type: kafka, topic: {topic}, bootstrap_servers: "{bootstrap}"}}
{schema}sinks:
  - {{type: warehouse, table: telemetry, url: "{url}"}}
  - {{type: lake, table: pgoutage}}
"""


def committed_epoch(home: Path, pipeline: str) -> int:
    """Epochs checkpointed so far, summed over the pipeline's partition tasks."""
    try:
        with sqlite3.connect(home / "metadata.db", timeout=5) as conn:
            row = conn.execute(
                "select sum(epoch) from checkpoints where pipeline like ?", (pipeline + "#%",)
            ).fetchone()
    except sqlite3.OperationalError:
        return 0
    return int(row[0]) if row and row[0] is not None else 0


def last_run_stats(home: Path, pipeline: str) -> dict[str, Any]:
    """The counters the run history recorded for the pipeline's latest run."""
    with sqlite3.connect(home / "metadata.db", timeout=5) as conn:
        row = conn.execute(
            "select status, stats from pipeline_runs where pipeline = ? order by id desc",
            (pipeline,),
        ).fetchone()
    assert row is not None, "the run left no history"
    return {"status": row[0], **json.loads(row[1] or "{}")}


def wait_for_epoch(proc: subprocess.Popen[bytes], home: Path, pipeline: str, epoch: int) -> None:
    """Block until ``epoch`` is checkpointed while the run is still going."""
    deadline = time.monotonic() + 120
    while committed_epoch(home, pipeline) < epoch and proc.poll() is None:
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before the fault could be injected"


def write_events(tmp_path: Path) -> tuple[Path, Path]:
    """``TOTAL`` distinct telemetry events as JSON lines: the first ``N_EVENTS``, the rest."""
    events = tmp_path / "events.jsonl"
    synthetic.write_jsonl(synthetic.telemetry(TOTAL, n_devices=20, seed=7), events)
    lines = events.read_bytes().splitlines(keepends=True)
    assert len(lines) == TOTAL
    head, tail = tmp_path / "head.jsonl", tmp_path / "tail.jsonl"
    head.write_bytes(b"".join(lines[:N_EVENTS]))
    tail.write_bytes(b"".join(lines[N_EVENTS:]))
    return head, tail


def produce(bootstrap: str, topic: str, events: Path, count: int) -> None:
    """Produce a JSON-lines file keyed by device (acknowledged by the broker)."""
    assert produce_file(bootstrap, topic, events, key="device_id") == count


def lake_counts(home: Path, table: str) -> tuple[int, int]:
    """Rows and distinct ``(device_id, ts)`` pairs of a lake table."""
    from deltalake import DeltaTable

    lake = DeltaTable(str(home / "lake" / table)).to_pyarrow_table(columns=["device_id", "ts"])
    con = duckdb.connect()
    con.register("lake", lake)
    got = con.execute("select count(*), count(distinct (device_id, ts)) from lake").fetchone()
    assert got is not None
    return int(got[0]), int(got[1])


def finish(proc: subprocess.Popen[bytes]) -> str:
    """Wait for the run to end successfully; its stderr."""
    try:
        _out, err = proc.communicate(timeout=200)
    except subprocess.TimeoutExpired:
        proc.kill()
        _out, err = proc.communicate(timeout=30)
        pytest.fail(f"the run did not finish: {err.decode()[-3000:]}")
    assert proc.returncode == 0, err.decode()[-3000:]
    return err.decode()


def test_broker_restart_mid_run_loses_and_duplicates_nothing(
    durable_kafka_broker: TansuBroker, tmp_path: Path
) -> None:
    bootstrap = durable_kafka_broker.bootstrap
    head, tail = write_events(tmp_path)
    topic = new_topic(bootstrap, partitions=PARTITIONS)
    produce(bootstrap, topic, head, N_EVENTS)
    home, pipeline = tmp_path / "home", tmp_path / "p.yaml"
    pipeline.write_text(RESTART_PIPELINE.format(topic=topic, bootstrap=bootstrap, schema=SCHEMA))

    proc = _start(pipeline, home)
    try:
        wait_for_epoch(proc, home, "kafkarestart", 3)
        durable_kafka_broker.kill()
        time.sleep(OUTAGE_S)
        assert proc.poll() is None, "the run ended while the broker was down"
        durable_kafka_broker.start()
        produce(bootstrap, topic, tail, N_TAIL)
        finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)

    assert lake_counts(home, "kafkarestart") == (TOTAL, TOTAL)


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for one test (dropped afterwards); its name."""
    with temporary_database("sluice_kt") as name:
        yield name


def set_database_available(name: str, available: bool) -> None:
    """Open or close ``name`` to connections; closing also ends its current sessions."""
    import psycopg

    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(available).lower()}')
        if not available:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )


@pytest.mark.postgres
def test_warehouse_outage_pauses_the_run_and_loses_and_duplicates_nothing(
    kafka_broker: str, pg_database: str, tmp_path: Path
) -> None:
    import psycopg

    head, tail = write_events(tmp_path)
    topic = new_topic(kafka_broker, partitions=PARTITIONS)
    produce(kafka_broker, topic, head, N_EVENTS)
    url = f"postgresql://postgres@127.0.0.1:5432/{pg_database}"
    home, pipeline = tmp_path / "home", tmp_path / "p.yaml"
    pipeline.write_text(
        OUTAGE_PIPELINE.format(topic=topic, bootstrap=kafka_broker, url=url, schema=SCHEMA)
    )

    proc = _start(pipeline, home)
    try:
        wait_for_epoch(proc, home, "pgoutage", 3)
        set_database_available(pg_database, False)
        produce(kafka_broker, topic, tail, N_TAIL)
        time.sleep(OUTAGE_S)
        stalled_at = committed_epoch(home, "pgoutage")
        time.sleep(1.0)
        assert committed_epoch(home, "pgoutage") == stalled_at, "epochs went on without the sink"
        set_database_available(pg_database, True)
        err = finish(proc)
    finally:
        set_database_available(pg_database, True)
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)

    assert "sink warehouse:telemetry unavailable" in err and "retrying" in err
    stats = last_run_stats(home, "pgoutage")
    assert stats["status"] == "succeeded" and stats["sink_retries"] >= 1
    with psycopg.connect(url) as conn:
        got = conn.execute(
            "SELECT count(*), count(DISTINCT (device_id, ts)) FROM telemetry"
        ).fetchone()
    assert got == (TOTAL, TOTAL)
    assert lake_counts(home, "pgoutage") == (TOTAL, TOTAL)
