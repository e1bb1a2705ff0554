"""`sluice demo` end to end: summary, the seed's curl command, the dashboard in Chromium."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest

from tests.conftest import require_service
from tests.integration.test_api_server import free_port

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _wait_up(url: str, proc: subprocess.Popen[bytes], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else "demo exited"
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError("the demo did not start serving")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Run `sluice demo` (small) serving on a free port; stop it with SIGTERM afterwards."""
    home = tmp_path_factory.mktemp("demo") / "home"
    port = free_port()
    env = {**os.environ, "SLUICE_HOME": str(home), "COLUMNS": "200"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sluice.cli", "demo", "--events", "30000", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    _wait_up(url, proc)
    yield url, home, proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def test_seed_curl_command_returns_a_prediction(demo) -> None:  # type: ignore[no-untyped-def]
    url, _, _ = demo
    curl = shutil.which("curl")
    require_service(curl is not None, "curl")
    out = subprocess.run(
        [curl, "-s", "-X", "POST", f"{url}/api/v1/predict", "-d", '{"data": "sample input"}'],
        capture_output=True,
        check=True,
        timeout=30,
    )
    body = orjson.loads(out.stdout)
    assert body["model"] == "ticket_category"
    assert body["prediction"]["label"] in {"billing", "technical", "account", "shipping", "other"}
    record = httpx.post(
        f"{url}/api/v1/predict",
        json={
            "data": {"device_id": "dev-0001", "temp_c": 25.0, "pressure": 30.0, "vibration": 1.0}
        },
    )
    assert record.status_code == 200 and record.json()["model"] == "temp_anomaly"
    assert record.json()["prediction"]["score"] >= 0.0


def test_demo_tables_are_queryable(demo) -> None:  # type: ignore[no-untyped-def]
    url, _, _ = demo
    r = httpx.post(f"{url}/api/v1/query", json={"sql": "select count(*) as n from telemetry"})
    assert r.status_code == 200, r.text
    assert "30000" in r.text.replace(",", "")


def test_dashboard_shows_demo_pipelines_and_anomalies(demo, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url, _, _ = demo
    chromium = shutil.which("chromium")
    require_service(chromium is not None, "Debian chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(url + "/")
        page.wait_for_selector("#pipelines tbody tr")
        page.wait_for_function("document.querySelectorAll('#anomalies tbody tr').length > 0")
        shot = page.screenshot(path=str(tmp_path / "demo-dashboard.png"), full_page=True)
        pipelines = page.inner_text("#pipelines tbody")
        anomalies = page.inner_text("#anomalies tbody")
        models = page.inner_text("#models tbody")
        jobs = page.inner_text("#jobs tbody")
        success_squares = page.locator("#jobs .sq.success").count()
        browser.close()
    assert errors == []
    assert "telemetry" in pipelines and "tickets" in pipelines
    assert "sigma" in anomalies or "stuck" in anomalies or "rising" in anomalies
    assert "ticket_category" in models
    assert "nightly" in jobs and "success" in jobs
    assert success_squares >= 4  # the demo ran the nightly job once: four green squares
    assert "30,005" in pipelines  # events read by the demo's earlier run (5 were bad)
    assert len(shot) > 30_000


def test_sigterm_stops_the_service_cleanly(demo) -> None:  # type: ignore[no-untyped-def]
    _, _, proc = demo
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
