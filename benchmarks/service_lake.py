"""Ingest-to-lake latency: events POSTed to ``sluice serve`` until their Delta commit is visible.

``sluice serve`` runs one pipeline reading the embedded log stream (``type: log``) and
appending to a lake table. A sender POSTs ``batch`` events every ``interval`` seconds (5,000
events/s by default) to ``/api/v1/ingest/{stream}``, each event stamped with its send time.
Afterwards every Delta commit of the table is read back from ``_delta_log``: a row's latency is
the time its commit file appeared (its mtime: the moment readers can see the row) minus the
row's send stamp. The first ``warmup`` seconds of events (the table is created then) are left
out. The sink keeps its log entries for an hour (``log_retention: 1h``): by default it drops
the entries a log checkpoint covers (every 100 commits), and their mtimes are what is measured.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import orjson
import pyarrow.parquet as pq
from service_wrk import free_port, wait_until_up

STREAM = "lake_events"
PIPELINE = """
name: ingest_lake
source: {{type: log, stream: {stream}}}
schema:
  device_id: string
  seq: long
  sent_us: long
  temperature: double
batch: {{max_rows: 200000, max_latency: {max_latency}}}
sinks:
  - {{type: lake, table: {stream}, partition_by: none, log_retention: 1h}}
"""


@dataclass
class LakeLatency:
    """Per-event ingest-to-lake latency of one run."""

    max_latency: str
    sent: int
    seconds: float
    measured: int
    commits: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    post_p50_ms: float
    post_p99_ms: float

    @property
    def rate(self) -> float:
        """Events sent per second, as achieved."""
        return self.sent / self.seconds


def _send(url: str, rate: int, batch: int, seconds: float) -> tuple[int, float, list[float]]:
    """POST ``batch`` stamped events every ``batch / rate`` s; count, duration, POST times."""
    interval = batch / rate
    posts: list[float] = []
    seq = 0
    with httpx.Client(timeout=30) as client:
        started = time.monotonic()
        tick = 0
        while (due := started + tick * interval) < started + seconds:
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            sent_us = time.time_ns() // 1000
            body = b"\n".join(
                orjson.dumps(
                    {
                        "device_id": f"dev-{(seq + i) % 100:03d}",
                        "seq": seq + i,
                        "sent_us": sent_us,
                        "temperature": 70.0 + (seq + i) % 17 * 0.5,
                    }
                )
                for i in range(batch)
            )
            began = time.perf_counter()
            client.post(url, content=body).raise_for_status()
            posts.append((time.perf_counter() - began) * 1000)
            seq += batch
            tick += 1
        return seq, time.monotonic() - started, posts


def _commits(table: Path) -> list[tuple[int, list[Path]]]:
    """(visibility time in µs, data files added) of every commit of the Delta table."""
    out = []
    for log in sorted((table / "_delta_log").glob("*.json")):
        added = []
        for line in log.read_text().splitlines():
            action = json.loads(line)
            if "add" in action and action["add"].get("dataChange", True):
                added.append(table / action["add"]["path"])
        if added:
            out.append((os.stat(log).st_mtime_ns // 1000, added))
    return out


def _rows_seen(table: Path) -> int:
    if not (table / "_delta_log").exists():
        return 0
    return sum(pq.read_metadata(f).num_rows for _, files in _commits(table) for f in files)


def run_lake(
    workdir: Path,
    max_latency: str,
    seconds: float,
    rate: int = 5_000,
    batch: int = 50,
    warmup: float = 2.0,
) -> LakeLatency:
    """Serve the pipeline, send events at ``rate`` for ``seconds``, measure per-event latency."""
    home = workdir / f"lake-{max_latency}"
    pipeline = workdir / f"ingest_lake_{max_latency}.yaml"
    pipeline.write_text(PIPELINE.format(stream=STREAM, max_latency=max_latency))
    port = free_port()
    env = {**os.environ, "SLUICE_HOME": str(home)}
    cmd = [sys.executable, "-m", "sluice.cli", "serve", str(pipeline), "--port", str(port)]
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/readyz", server, "sluice serve")
        sent, took, posts = _send(f"{url}/api/v1/ingest/{STREAM}", rate, batch, seconds)
        table = home / "lake" / STREAM
        deadline = time.monotonic() + 120
        while _rows_seen(table) < sent:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the lake holds {_rows_seen(table)} of {sent} events")
            time.sleep(0.5)
    finally:
        server.terminate()
        server.wait(timeout=120)
    return _measure(table, max_latency, sent, took, posts, warmup, rate)


def _measure(
    table: Path,
    max_latency: str,
    sent: int,
    took: float,
    posts: list[float],
    warmup: float,
    rate: int,
) -> LakeLatency:
    latencies = []
    commits = _commits(table)
    for visible_us, files in commits:
        for path in files:
            rows = pq.read_table(path, columns=["seq", "sent_us"])
            keep = rows.column("seq").to_numpy() >= warmup * rate
            sent_us = rows.column("sent_us").to_numpy()[keep]
            latencies.append((visible_us - sent_us) / 1000.0)
    values = np.concatenate(latencies)
    return LakeLatency(
        max_latency=max_latency,
        sent=sent,
        seconds=took,
        measured=int(values.size),
        commits=len(commits),
        p50_ms=float(np.percentile(values, 50)),
        p99_ms=float(np.percentile(values, 99)),
        max_ms=float(values.max()),
        post_p50_ms=float(np.percentile(posts, 50)),
        post_p99_ms=float(np.percentile(posts, 99)),
    )
