"""A million tiny rejected events from one request cost `sluice serve` O(body) memory."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from tests.e2e.test_serve_crash import _wait_up
from tests.integration.test_api_server import free_port

PIPELINE = """\
name: strict
source: {type: log, stream: events}
schema: {device_id: {type: string, required: true}, temperature: double}
sinks:
  - {type: lake, table: strict}
"""
EVENTS = 1_000_000
RSS_BUDGET = 400 * 1024 * 1024


def _lag(client: httpx.Client) -> int:
    status = client.get("/api/v1/pipelines/strict").json()
    assert status["state"] != "failed", status
    lag = status.get("lag") or {}
    return sum(lag.values()) if isinstance(lag, dict) else int(lag)


def _dead_lettered(client: httpx.Client) -> int:
    return sum(int(row["count"]) for row in client.get("/api/v1/dlq/summary").json())


def test_a_million_rejected_objects_stay_within_400_mb(tmp_path: Path) -> None:
    home, port = tmp_path / "home", free_port()
    pipeline = tmp_path / "strict.yaml"
    pipeline.write_text(PIPELINE)
    env = {**os.environ, "SLUICE_HOME": str(home), "SLUICE_API_MAX_ITEMS": str(EVENTS)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sluice.cli", "serve", str(pipeline), "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_up(url)
        server = psutil.Process(proc.pid)
        with httpx.Client(base_url=url, timeout=300) as client:
            before = server.memory_info().rss
            body = b"[" + b",".join([b"{}"] * EVENTS) + b"]"  # 3 MB
            r = client.post(
                "/api/v1/ingest/events", content=body, headers={"content-type": "application/json"}
            )
            assert r.status_code == 202, r.text
            assert r.json()["count"] == EVENTS
            peak = server.memory_info().rss
            deadline = time.monotonic() + 300
            while _lag(client) > 0:
                peak = max(peak, server.memory_info().rss)
                assert time.monotonic() < deadline, "the pipeline did not consume every event"
                time.sleep(0.2)
            while _dead_lettered(client) < EVENTS:  # the last epoch lands with its checkpoint
                peak = max(peak, server.memory_info().rss)
                assert time.monotonic() < deadline, "the dead letters did not all land"
                time.sleep(0.5)
            peak = max(peak, server.memory_info().rss)
            summary = client.get("/api/v1/dlq/summary").json()
            rows = client.get("/api/v1/dlq", params={"limit": 1}).json()["rows"]
        assert [(s["pipeline"], s["stage"], s["count"]) for s in summary] == [
            ("strict", "decode", EVENTS)
        ]
        assert rows[0]["reason"] == "missing required field 'device_id'"
        assert rows[0]["raw"] == "{}"
        assert peak - before < RSS_BUDGET, f"RSS grew by {(peak - before) >> 20} MB"
    finally:
        proc.terminate()
        proc.wait(timeout=60)
