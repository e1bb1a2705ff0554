"""Service benchmark: HTTP ingest throughput and predict latency vs a bare FastAPI endpoint.

Each server runs in its own uvicorn process on a loopback port; the load generator is
``wrk`` (Debian package) so the client does not compete for the GIL. Ingest sends NDJSON
batches of 500 events to ``/api/v1/ingest/{stream}`` (every 202 is durable: one SQLite
transaction with fsync per request). Predict sends the seed's body shape with curl's form
content type; the bare endpoint is a FastAPI route returning a constant, measured in the
same run, so the ratio shows how close predict gets to the framework's own ceiling.

    python benchmarks/service.py [--duration 10] [--connections 16] [--predictor sklearn|sluice]
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, machine

BATCH = 500
SERVER = """
import sys
import uvicorn
from fastapi import FastAPI

kind, home, port, predictor_kind = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
if kind == "bare":
    app = FastAPI()

    @app.post("/const")
    async def const() -> dict:
        return {"model": "const", "predictions": [{"score": 0.0}]}
else:
    from sluice.api import ApiConfig, ApiKeys, create_app
    from sluice.core.settings import Settings

    if predictor_kind == "sluice":
        from sluice.models.predict import Predictor
        predict = Predictor(Settings(home=home)).predict
    else:
        import numpy as np
        from sklearn.linear_model import LogisticRegression

        rng = np.random.default_rng(0)
        x = rng.normal(size=(500, 2))
        classifier = LogisticRegression().fit(x, x[:, 0] + x[:, 1] > 0)

        def predict(data, model=None):
            if model == "const":  # the route's own cost, without a model
                return {"model": "const", "predictions": [{"score": 0.0}]}
            rows = [data] if isinstance(data, dict) else data
            feats = np.array([[r["temperature"], r["pressure"]] for r in rows], dtype=float)
            proba = classifier.predict_proba(feats)[:, 1]
            return {"model": "sklearn_logreg",
                    "predictions": [{"score": float(p)} for p in proba]}

    app = create_app(Settings(home=home), predictor=predict, api_keys=ApiKeys(),
                     config=ApiConfig(auto_create_streams=True, max_backlog=10**12))
uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
"""
WRK_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "{content_type}"
local f = io.open("{body_path}", "rb")
wrk.body = f:read("*a")
f:close()
"""


@dataclass
class WrkResult:
    """Throughput and latency percentiles reported by wrk."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int


def free_port() -> int:
    """An unused loopback TCP port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(kind: str, home: Path, predictor: str) -> tuple[subprocess.Popen[bytes], str]:
    """Start one uvicorn server process and wait until it answers."""
    port = free_port()
    cmd = [sys.executable, "-c", textwrap.dedent(SERVER), kind, str(home), str(port), predictor]
    proc = subprocess.Popen(cmd)
    url = f"http://127.0.0.1:{port}"
    probe = "/docs" if kind == "bare" else "/healthz"
    for _ in range(300):
        try:
            if httpx.get(url + probe, timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{kind} server did not start")


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(
    url: str, body: bytes, content_type: str, duration: int, connections: int, workdir: Path
) -> WrkResult:
    """POST ``body`` to ``url`` with wrk and parse its report."""
    body_path = workdir / f"body_{abs(hash(url))}.bin"
    body_path.write_bytes(body)
    script = workdir / "post.lua"
    script.write_text(WRK_LUA.format(content_type=content_type, body_path=body_path))
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return WrkResult(
        rps=float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        p50_ms=_ms(percentiles["50"]),
        p99_ms=_ms(percentiles["99"]),
        requests=int(re.search(r"(\d+) requests in", out).group(1)),  # type: ignore[union-attr]
        errors=int(errors.group(1)) if errors else 0,
    )


def ingest_body() -> bytes:
    """One NDJSON batch of 500 telemetry-like events."""
    events = [
        {
            "device_id": f"dev-{i % 100:03d}",
            "ts": 1_700_000_000_000 + i,
            "temperature": 70.0 + (i % 17) * 0.5,
            "pressure": 1.0 + (i % 7) * 0.01,
            "status": "ok",
        }
        for i in range(BATCH)
    ]
    return b"\n".join(orjson.dumps(e) for e in events) + b"\n"


def main() -> None:
    """Run the service benchmark and write benchmarks/results/service.md."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--predictor", choices=["sklearn", "sluice"], default="sklearn")
    parser.add_argument("--home", type=Path, help="SLUICE_HOME with models")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is required: apt-get install wrk")
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        workdir = Path(tmp)
        home = args.home or workdir / "home"
        sluice, url = start_server("sluice", home, args.predictor)
        bare, bare_url = start_server("bare", home, args.predictor)
        try:
            ingest = run_wrk(
                f"{url}/api/v1/ingest/bench",
                ingest_body(),
                "application/x-ndjson",
                args.duration,
                args.connections,
                workdir,
            )
            stored = httpx.get(f"{url}/api/v1/streams").json()
            record = b'{"data": {"temperature": 71.5, "pressure": 1.02}}'
            form = "application/x-www-form-urlencoded"
            predict = run_wrk(
                f"{url}/api/v1/predict", record, form, args.duration, args.connections, workdir
            )
            route = run_wrk(
                f"{url}/api/v1/predict",
                record[:-1] + b', "model": "const"}',
                form,
                args.duration,
                args.connections,
                workdir,
            )
            const = run_wrk(
                f"{bare_url}/const", record, form, args.duration, args.connections, workdir
            )
        finally:
            for proc in (sluice, bare):
                proc.terminate()
                proc.wait(timeout=30)
    end = next(s["end_offset"] for s in stored if s["name"] == "bench")
    write_report(args, ingest, end, predict, route, const)


def write_report(
    args: argparse.Namespace,
    ingest: WrkResult,
    stored: int,
    predict: WrkResult,
    route: WrkResult,
    const: WrkResult,
) -> None:
    """Print and save the results section."""
    accepted = (ingest.requests - ingest.errors) * BATCH
    text = f"""## Service (HTTP ingest and predict)

`python benchmarks/service.py --duration {args.duration} --connections {args.connections} \
--predictor {args.predictor}` on {machine()}; servers are single uvicorn processes on
127.0.0.1, load from `wrk -t2 -c{args.connections}` on the same 2 cores.

| Measure | Result |
|---|---|
| Ingest, NDJSON batches of {BATCH}, durable 202 | **{ingest.rps * BATCH:,.0f} events/s** \
({ingest.rps:,.0f} requests/s, p50 {ingest.p50_ms:.1f} ms, p99 {ingest.p99_ms:.1f} ms, \
{ingest.errors} non-2xx) |
| Events in the log after the run / accepted (202) | {stored:,} / {accepted:,} |
| Predict, single record ({args.predictor}), form content type | \
**{predict.rps:,.0f} requests/s**, p50 {predict.p50_ms:.2f} ms, p99 {predict.p99_ms:.2f} ms \
({predict.errors} non-2xx) |
| Predict route with a constant predictor (`"model": "const"`) | \
{route.rps:,.0f} requests/s, p50 {route.p50_ms:.2f} ms, p99 {route.p99_ms:.2f} ms |
| Bare FastAPI endpoint returning a constant (same run) | {const.rps:,.0f} requests/s, \
p50 {const.p50_ms:.2f} ms, p99 {const.p99_ms:.2f} ms |
| Predict / bare ratio (model included; route alone) | **{predict.rps / const.rps:.2f}**; \
{route.rps / const.rps:.2f} |
"""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "service.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
