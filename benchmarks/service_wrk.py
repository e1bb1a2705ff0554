"""Servers and the wrk load generator for the service benchmark.

Each server is its own uvicorn process on a loopback port: ``bare`` is a FastAPI app whose one
route returns a constant (the framework's ceiling); ``sluice`` is ``create_app`` with the real
``sluice.models.predict.Predictor`` over a prepared ``SLUICE_HOME`` (``"model": "const"``
answers a constant through the same route, to show the route's own cost).
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

SERVER = """
import sys
import uvicorn
from fastapi import FastAPI

kind, home, port, stack = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
if kind == "bare":
    app = FastAPI()

    @app.post("/const")
    async def const() -> dict:
        return {"model": "const", "prediction": {"score": 0.0}}
else:
    from sluice.api import ApiConfig, ApiKeys, create_app
    from sluice.core.settings import Settings
    from sluice.models.predict import Predictor

    predictor = Predictor(Settings(home=home))

    def predict(data, model=None):
        if model == "const":  # the route's own cost, without a model
            return {"model": "const", "prediction": {"score": 0.0}}
        return predictor.predict(data, model)

    app = create_app(Settings(home=home), predictor=predict, api_keys=ApiKeys(),
                     config=ApiConfig(auto_create_streams=True, max_backlog=10**12))
# "auto" picks uvloop and httptools when installed, as `sluice serve` does
http, loop = ("h11", "asyncio") if stack == "h11" else ("auto", "auto")
uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
            http=http, loop=loop)
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

    def cell(self) -> str:
        """``N requests/s, p50 .. ms, p99 .. ms`` for a results table."""
        errors = f", {self.errors} non-2xx" if self.errors else ""
        return (
            f"{self.rps:,.0f} requests/s, p50 {self.p50_ms:.2f} ms, "
            f"p99 {self.p99_ms:.2f} ms{errors}"
        )


def free_port() -> int:
    """An unused loopback TCP port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(url: str, proc: subprocess.Popen[bytes], what: str, tries: int = 600) -> None:
    """Poll ``url`` until it answers 200 (``proc`` dying or 60 s passing is an error)."""
    for _ in range(tries):
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{what} did not start")


def start_server(kind: str, home: Path, stack: str = "auto") -> tuple[subprocess.Popen[bytes], str]:
    """Start one uvicorn server process (``stack``: auto or h11) and wait until it answers."""
    port = free_port()
    cmd = [sys.executable, "-c", textwrap.dedent(SERVER), kind, str(home), str(port), stack]
    proc = subprocess.Popen(cmd)
    url = f"http://127.0.0.1:{port}"
    wait_until_up(url + ("/docs" if kind == "bare" else "/healthz"), proc, f"{kind} server")
    return proc, url


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(
    url: str, body: bytes, content_type: str, duration: int, connections: int, workdir: Path
) -> WrkResult:
    """POST ``body`` to ``url`` with wrk and parse its report."""
    body_path = workdir / "body.bin"
    body_path.write_bytes(body)
    script = workdir / "post.lua"
    script.write_text(WRK_LUA.format(content_type=content_type, body_path=body_path))
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
        timeout=duration + 60,
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
