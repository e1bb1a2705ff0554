"""The API through a real uvicorn server on a free loopback port (thread and subprocess)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import uvicorn

from sluice.api import ApiConfig, ApiKeys, create_app
from sluice.core.settings import Settings
from sluice.storage.log import EmbeddedLog


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)
    raise AssertionError(f"server at {url} did not start")


def echo_predictor(data: object, model: str | None = None) -> dict[str, object]:
    """Predicts the length of a text (a real, if tiny, model)."""
    if isinstance(data, str):
        return {"model": model or "text_length", "predictions": [{"score": len(data)}]}
    return {"model": model or "records", "predictions": [{"score": 0.0}]}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    app = create_app(
        Settings(home=tmp_path),
        predictor=echo_predictor,
        api_keys=ApiKeys(),
        config=ApiConfig(auto_create_streams=True, max_body_bytes=1024 * 1024),
    )
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    wait_until_up(url)
    yield url
    srv.should_exit = True
    thread.join(timeout=10)


def test_curl_predict_command_over_http(server: str) -> None:
    curl = subprocess.run(
        ["curl", "-s", "-X", "POST", f"{server}/api/v1/predict", "-d", '{"data": "sample input"}'],
        capture_output=True,
        timeout=30,
    )
    assert curl.returncode == 0
    assert orjson.loads(curl.stdout) == {"model": "text_length", "predictions": [{"score": 12}]}


def test_ingest_and_read_back_over_http(server: str, tmp_path: Path) -> None:
    body = b"\n".join(orjson.dumps({"i": i}) for i in range(500))
    r = httpx.post(f"{server}/api/v1/ingest/events", content=body, timeout=10)
    assert r.status_code == 202
    assert r.json() == {"stream": "events", "count": 500, "first_offset": 0, "last_offset": 499}
    assert httpx.get(f"{server}/api/v1/streams").json()[0]["end_offset"] == 500
    assert "sluice_ingest_events_total" in httpx.get(f"{server}/metrics").text
    assert httpx.get(f"{server}/").status_code == 200


def test_50mb_body_is_refused(server: str, tmp_path: Path) -> None:
    def chunks() -> Iterator[bytes]:  # chunked: no Content-Length to refuse up front
        for _ in range(50):
            yield b" " * (1024 * 1024)

    try:
        r = httpx.post(f"{server}/api/v1/ingest/events", content=chunks(), timeout=30)
        assert r.status_code == 413
        assert "larger than the limit" in r.json()["error"]
    except httpx.TransportError:
        pass  # the server may close the connection while the client is still sending
    r = httpx.post(f"{server}/api/v1/ingest/events", content=b"x" * (50 * 1024 * 1024), timeout=30)
    assert r.status_code == 413  # refused on Content-Length alone
    assert not (tmp_path / "log" / "events.db").exists()


SERVER_SCRIPT = """
import sys, uvicorn
from sluice.api import ApiConfig, ApiKeys, create_app
from sluice.core.settings import Settings
app = create_app(Settings(home=sys.argv[1]), api_keys=ApiKeys(),
                 config=ApiConfig(auto_create_streams=True))
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""


def test_sigkill_during_ingest_loses_no_acknowledged_event(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(SERVER_SCRIPT), str(tmp_path), str(port)]
    )
    url = f"http://127.0.0.1:{port}"
    acked: list[tuple[int, int]] = []
    try:
        wait_until_up(url)
        with httpx.Client(base_url=url, timeout=10) as client:
            batch = 0
            while True:
                body = orjson.dumps([{"batch": batch, "n": n} for n in range(200)])
                try:
                    r = client.post("/api/v1/ingest/events", content=body)
                except httpx.TransportError:
                    break  # killed mid-request: that batch was never acknowledged
                assert r.status_code == 202
                acked.append((batch, r.json()["first_offset"]))
                batch += 1
                if batch == 20:
                    os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert len(acked) >= 20
    log = EmbeddedLog(tmp_path / "log")
    rows = log.read("events", 0, 1_000_000)
    payloads = [orjson.loads(r) for r in rows.column("_raw").to_pylist()]
    for batch, first in acked:
        assert payloads[first : first + 200] == [{"batch": batch, "n": n} for n in range(200)]


@pytest.fixture
def dashboard_server(tmp_path: Path) -> Iterator[str]:
    from tests.unit.test_api import StaticPipelines
    from tests.unit.test_api_data import DuckEngine, dead_letters, telemetry

    engine = DuckEngine({"telemetry": telemetry(), "dead_letters": dead_letters()})
    pipelines = StaticPipelines()
    kafka = {**pipelines.status["telemetry"], "name": "orders", "source": {"type": "kafka"}}
    pipelines.status["orders"] = {**kafka, "lag": {"orders/0": 5, "orders/1": 7}, "tables": []}
    app = create_app(
        Settings(home=tmp_path),
        pipelines_provider=pipelines,
        api_keys=ApiKeys(),
        config=ApiConfig(),
        models_provider=lambda: [
            {
                "name": "temp_anomaly",
                "version": 3,
                "stage": "production",
                "format": "online",
                "features": ["temp_c"],
                "metrics": {"f1": 0.91},
            }
        ],
        query_engine_factory=lambda _settings: engine,
    )
    port = free_port()
    srv = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    wait_until_up(url)
    httpx.post(f"{url}/api/v1/ingest/events", json=[{"a": 1}] * 3)
    yield url
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.mark.browser
def test_dashboard_renders_in_headless_chromium(dashboard_server: str, tmp_path: Path) -> None:
    from tests.conftest import require_service

    chromium = shutil.which("chromium")
    require_service(chromium is not None, "Debian chromium")
    from playwright.sync_api import sync_playwright

    args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=args)
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(dashboard_server + "/")
        page.wait_for_function("document.body.dataset.loaded === 'true'")
        page.wait_for_function("document.querySelectorAll('#incidents tbody tr').length === 3")
        shot = page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
        pipelines = page.inner_text("#pipelines tbody")
        incidents = page.inner_text("#incidents tbody")
        series = page.inner_text("#series-title")
        models = page.inner_text("#models tbody")
        dlq = page.inner_text("#dlq tbody")
        jobs_empty = page.is_visible("#jobs-empty")
        actions_empty = page.is_visible("#actions-empty")
        status = page.inner_text("#updated")
        chart_pixels = page.evaluate("document.getElementById('chart').toDataURL().length")
        ticks = page.evaluate("document.getElementById('chart').width")
        page.click("#pipelines tbody a.link >> text=orders")
        page.wait_for_function(
            "document.getElementById('detail-title').textContent.includes('orders')"
        )
        detail = page.inner_text("#detail")
        browser.close()
    assert errors == []
    assert "telemetry" in pipelines and "running" in pipelines and "120.5" in pipelines
    assert "12 (2 partitions)" in pipelines  # Kafka lag summed over its partitions
    assert "orders/0\t5" in detail and "orders/1\t7" in detail  # per-partition lag on click
    assert "temp_c z=9" in incidents and "drift" in incidents and "d0" in incidents
    assert "device_id = d" in series
    assert "temp_anomaly" in models and "production" in models and "f1 0.91" in models
    assert "invalid JSON" in dlq
    assert jobs_empty and actions_empty
    assert status.startswith("updated")
    assert chart_pixels > 3000 and ticks > 0  # axes and lines were drawn
    assert len(shot) > 30_000  # a rendered page, not a blank one
