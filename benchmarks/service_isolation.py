"""Service isolation benchmark: /healthz under a maximal query result, epochs under slow queries.

Runs ``sluice serve`` (its own process, a fresh ``SLUICE_HOME``) with a log-to-warehouse
pipeline, then measures:

1. ``/healthz`` latency (p50, p99, max) while the largest result the API allows
   (``SLUICE_API_MAX_RESULT_BYTES``, 16 MiB by default, 10,000 rows) is built and serialised,
   back to back. Target: < 200 ms.
2. The pipeline's progress while two clients run slow read-only queries over the warehouse
   back to back, against the same window without queries: epochs committed, events landed,
   the largest lag seen, and how many queries completed meanwhile. Events are pushed at a
   steady rate in both windows.

    python benchmarks/service_isolation.py [--seconds 20] [--rate 2000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

PIPELINE = """\
name: live
source: {type: log, stream: events}
schema: {batch: long, n: long, device_id: string}
batch: {max_rows: 5000, max_latency: 100ms}
sinks:
  - {type: warehouse, table: live}
"""
# ~15.9 MB of JSON in 10,000 rows: just under the default 16 MiB result limit
LARGEST = "SELECT range AS i, repeat('x', 1560) AS s FROM range(10000)"
SLOW = "SELECT sum(x % 7 + n) AS s FROM (SELECT * FROM live LIMIT 50), range(4000000) AS r(x)"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_serve(home: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``sluice serve`` with the warehouse pipeline; returns the process and its URL."""
    pipeline = home / "live.yaml"
    home.mkdir(parents=True, exist_ok=True)
    pipeline.write_text(PIPELINE)
    port = _free_port()
    env = {**os.environ, "SLUICE_HOME": str(home / "state")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sluice.cli", "serve", str(pipeline), "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("sluice serve did not start")


def _loop(stop: threading.Event, body: Callable[[], None]) -> threading.Thread:
    def run() -> None:
        while not stop.is_set():
            body()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def health_under_largest_result(url: str, seconds: float) -> dict[str, Any]:
    """/healthz latencies while the largest allowed result is produced back to back."""
    stop, in_flight = threading.Event(), threading.Event()
    sizes: list[int] = []
    query_times: list[float] = []
    client = httpx.Client(base_url=url, timeout=120)

    def largest() -> None:
        in_flight.set()
        started = time.perf_counter()
        r = client.post("/api/v1/query", json={"sql": LARGEST, "limit": 10_000})
        query_times.append(time.perf_counter() - started)
        assert r.status_code == 200, r.text[:200]
        sizes.append(len(r.content))

    worker = _loop(stop, largest)
    in_flight.wait()
    latencies = []
    with httpx.Client(base_url=url, timeout=30) as probe:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            started = time.perf_counter()
            probe.get("/healthz").raise_for_status()
            latencies.append((time.perf_counter() - started) * 1000)
            time.sleep(0.01)
    stop.set()
    worker.join()
    client.close()
    latencies.sort()
    return {
        "probes": len(latencies),
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1],
        "max_ms": latencies[-1],
        "results": len(sizes),
        "result_mb": max(sizes) / 1e6,
        "query_s": statistics.median(query_times),
    }


def progress(url: str, seconds: float, rate: int, slow_clients: int) -> dict[str, Any]:
    """Pipeline epochs, events and lag over ``seconds`` with ``slow_clients`` query loops."""
    stop = threading.Event()
    done: list[int] = []
    batch = max(1, rate // 10)
    pushed = [0]

    def slow(client: httpx.Client) -> Callable[[], None]:
        def run() -> None:
            if client.post("/api/v1/query", json={"sql": SLOW}).status_code == 200:
                done.append(1)

        return run

    clients = [httpx.Client(base_url=url, timeout=120) for _ in range(slow_clients)]
    loops = [_loop(stop, slow(c)) for c in clients]
    status = httpx.Client(base_url=url, timeout=30)
    ingest = httpx.Client(base_url=url, timeout=30)
    first = status.get("/api/v1/pipelines/live").json()
    max_lag, tick = 0, time.monotonic()
    deadline = tick + seconds
    while time.monotonic() < deadline:
        events = [{"batch": pushed[0], "n": n, "device_id": f"d{n % 50}"} for n in range(batch)]
        ingest.post("/api/v1/ingest/events", json=events).raise_for_status()
        pushed[0] += 1
        lag = status.get("/api/v1/pipelines/live").json().get("lag") or {}
        max_lag = max(max_lag, sum(lag.values()) if isinstance(lag, dict) else int(lag))
        tick += 0.1
        time.sleep(max(0.0, tick - time.monotonic()))
    last = status.get("/api/v1/pipelines/live").json()
    stop.set()
    for loop in loops:
        loop.join()
    for client in (*clients, status, ingest):
        client.close()
    return {
        "epochs": last["epoch"] - first["epoch"],
        "events": last["events_total"] - first["events_total"],
        "pushed": pushed[0] * batch,
        "max_lag": max_lag,
        "queries": len(done),
        "errors": last["errors"],
    }


def main() -> None:
    """Run both measurements and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=int, default=2000, help="events pushed per second")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="sluice-isolation-"))
    proc, url = start_serve(home)
    try:
        httpx.post(f"{url}/api/v1/ingest/events", json=[{"batch": 0, "n": 0, "device_id": "d"}])
        time.sleep(1)
        health = health_under_largest_result(url, args.seconds)
        print(
            f"/healthz while {health['results']} results of {health['result_mb']:.1f} MB were "
            f"built (median {health['query_s']:.2f} s each): p50 {health['p50_ms']:.1f} ms, "
            f"p99 {health['p99_ms']:.1f} ms, max {health['max_ms']:.1f} ms over "
            f"{health['probes']} probes (target < 200 ms)"
        )
        for clients in (0, 2):
            got = progress(url, args.seconds, args.rate, clients)
            print(
                f"{clients} slow-query clients, {args.seconds:g} s at {args.rate} ev/s: "
                f"{got['epochs']} epochs committed, {got['events']:,} of {got['pushed']:,} "
                f"events landed, max lag {got['max_lag']:,}, {got['queries']} slow queries "
                f"completed, {got['errors']} pipeline errors"
            )
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
