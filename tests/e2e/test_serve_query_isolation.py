"""Back-to-back slow queries in `sluice serve` never stop a warehouse pipeline's epochs."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.test_serve_crash import _wait_up
from tests.integration.test_api_server import free_port

PIPELINE = """\
name: live
source: {type: log, stream: events}
schema: {batch: long, n: long, device_id: string}
batch: {max_rows: 1000, max_latency: 100ms}
sinks:
  - {type: warehouse, table: live}
"""
# a snapshot scan of the warehouse table, then a second or so of work on it
SLOW = "SELECT sum(x % 7 + n) AS s FROM (SELECT * FROM live LIMIT 50), range(2000000) AS r(x)"
BATCHES, PER_BATCH = 12, 100


def _status(client: httpx.Client) -> dict[str, Any]:
    status: dict[str, Any] = client.get("/api/v1/pipelines/live").json()
    assert status["state"] == "running", status
    return status


def _until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 180  # a guard against hanging, not a measurement
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _committed(client: httpx.Client, total: int) -> Callable[[], bool]:
    return lambda: _status(client)["events_total"] >= total


def _query_loop(url: str, stop: threading.Event, done: list[int]) -> None:
    with httpx.Client(base_url=url, timeout=120) as client:
        while not stop.is_set():
            r = client.post("/api/v1/query", json={"sql": SLOW})
            assert r.status_code == 200, r.text
            done.append(1)


def _ingest(client: httpx.Client, batch: int) -> None:
    events = [{"batch": batch, "n": n, "device_id": f"d{n % 5}"} for n in range(PER_BATCH)]
    r = client.post("/api/v1/ingest/events", json=events)
    assert r.status_code == 202, r.text


def test_epochs_keep_committing_while_slow_queries_run(tmp_path: Path) -> None:
    home, port = tmp_path / "home", free_port()
    pipeline = tmp_path / "live.yaml"
    pipeline.write_text(PIPELINE)
    env = {**os.environ, "SLUICE_HOME": str(home)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sluice.cli", "serve", str(pipeline), "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    stop, done = threading.Event(), []
    loops = [threading.Thread(target=_query_loop, args=(url, stop, done)) for _ in range(2)]
    try:
        _wait_up(url)
        with httpx.Client(base_url=url, timeout=60) as client:
            _ingest(client, 0)
            _until(lambda: _status(client)["events_total"] >= PER_BATCH, "first epoch")
            for loop in loops:
                loop.start()
            _until(lambda: len(done) >= 2, "the slow queries to run")
            queries_before = len(done)
            epochs = []
            for batch in range(1, BATCHES):
                before = _status(client)["epoch"]
                _ingest(client, batch)
                _until(
                    _committed(client, (batch + 1) * PER_BATCH),
                    f"batch {batch} to be committed while queries run",
                )
                status = _status(client)
                assert status["epoch"] > before
                assert status["errors"] == 0, status["last_error"]  # no lock conflict, no backoff
                epochs.append(status["epoch"])
            # the queries kept running all along: one more finishes after the epochs (its
            # duration, not the epochs', decides when; a failed query stops its loop)
            _until(lambda: len(done) > queries_before, "a slow query to finish after the epochs")
            stop.set()
            for loop in loops:
                loop.join(timeout=120)
            rows = client.post("/api/v1/query", json={"sql": "SELECT count(*) AS n FROM live"})
            assert rows.json()["rows"] == [{"n": BATCHES * PER_BATCH}]
        assert epochs == sorted(set(epochs))
    finally:
        stop.set()
        proc.terminate()
        proc.wait(timeout=60)
