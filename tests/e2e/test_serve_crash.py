"""SIGKILL `sluice serve` while clients ingest: every acknowledged event lands once in the lake."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import orjson

from tests.integration.test_api_server import free_port

PIPELINE = """\
name: live
source: {type: log, stream: events}
schema: {batch: long, n: long, device_id: string, temperature: double}
batch: {max_rows: 5000, max_latency: 200ms}
models:
  - {name: live_anomaly, type: online_anomaly, features: [temperature], key: device_id}
sinks:
  - {type: lake, table: live}
"""


def _serve(home: Path, pipeline: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SLUICE_HOME": str(home)}
    return subprocess.Popen(
        [sys.executable, "-m", "sluice.cli", "serve", str(pipeline), "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _wait_up(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("sluice serve did not come up")


def _ingest(url: str, worker: int, acked: list[int], stop: threading.Event) -> None:
    with httpx.Client(base_url=url, timeout=10) as client:
        batch = worker * 100_000
        while not stop.is_set() and batch < worker * 100_000 + 400:
            body = orjson.dumps(
                [
                    {"batch": batch, "n": n, "device_id": f"d{n % 7}", "temperature": 20.0 + n % 5}
                    for n in range(100)
                ]
            )
            try:
                response = client.post("/api/v1/ingest/events", content=body)
            except httpx.TransportError:
                return  # the server died mid-request: that batch was never acknowledged
            if response.status_code == 202:
                acked.append(batch)
            batch += 1


def test_sigkill_of_serve_during_ingest_loses_no_acknowledged_event(tmp_path: Path) -> None:
    home, port = tmp_path / "home", free_port()
    pipeline = tmp_path / "live.yaml"
    pipeline.write_text(PIPELINE)
    url = f"http://127.0.0.1:{port}"
    proc = _serve(home, pipeline, port)
    acked: list[int] = []
    try:
        _wait_up(url)
        stop = threading.Event()
        workers = [threading.Thread(target=_ingest, args=(url, w, acked, stop)) for w in range(3)]
        for w in workers:
            w.start()
        deadline = time.monotonic() + 60
        while len(acked) < 60 and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        stop.set()
        for w in workers:
            w.join(timeout=30)
        assert len(acked) >= 60
        proc = _serve(home, pipeline, port)  # restart: the pipeline resumes from its checkpoint
        _wait_up(url)
        expected = len(acked) * 100
        deadline = time.monotonic() + 90
        landed = (0, 0)
        while time.monotonic() < deadline:
            r = httpx.post(
                f"{url}/api/v1/query",
                json={"sql": "select count(*) as n, count(distinct (batch, n)) as d from live"},
            )
            if r.status_code == 200:
                row = r.json()["rows"][0] if "rows" in r.json() else r.json()[0]
                landed = (row["n"], row["d"])
                if landed[0] >= expected:
                    break
            time.sleep(0.5)
        r = httpx.post(
            f"{url}/api/v1/query",
            json={
                "sql": "select count(*) as n from live where batch in "
                f"({','.join(map(str, acked))})"
            },
        )
        body = r.json()
        acked_rows = (body["rows"][0] if "rows" in body else body[0])["n"]
        assert acked_rows == expected  # every acknowledged event is in the lake
        assert landed[0] == landed[1]  # and none twice
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
