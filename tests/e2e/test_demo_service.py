"""`sluice demo` end to end: summary, the seed's curl command, metrics, offline docs and the
dashboard in Chromium (screenshots saved under SLUICE_TEST_ARTIFACTS, default a temp folder).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
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


def _wait_up(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError("the demo did not start serving")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Run `sluice demo` (small, output to a file: no TTY) serving on a free port."""
    base = tmp_path_factory.mktemp("demo")
    home = base / "home"
    home.mkdir()
    (home / "metadata.db").touch()  # an earlier run's state: the demo must say it reuses it
    log = base / "demo.log"
    port = free_port()
    env = {**os.environ, "SLUICE_HOME": str(home), "COLUMNS": "80"}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sluice.cli", "demo", "--events", "30000", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    _wait_up(url, proc, log)
    yield url, home, proc, log
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def _printed(log: Path) -> str:
    """What the demo printed so far, once its serving lines are there."""
    deadline = time.monotonic() + 30
    while "Ctrl-C to stop" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    return log.read_text()


def test_seed_curl_command_returns_a_prediction(demo) -> None:  # type: ignore[no-untyped-def]
    url, _, _, _ = demo
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


def test_raw_telemetry_record_goes_through_the_pipeline_steps(demo) -> None:  # type: ignore[no-untyped-def]
    url, _, _, _ = demo
    raw = {"device_id": "dev-0001", "temperature": 70.5, "pressure": 101.2, "vibration": 2.5}
    r = httpx.post(f"{url}/api/v1/predict", json={"data": raw})
    assert r.status_code == 200, r.text  # temp_c is derived from temperature, as the pipeline does
    assert r.json()["model"] == "temp_anomaly"
    assert set(r.json()["prediction"]) >= {"score", "anomaly", "reason"}
    missing = httpx.post(f"{url}/api/v1/predict", json={"data": {"device_id": "dev-0001"}})
    assert missing.status_code in (400, 422) and "model 'temp_anomaly'" in missing.json()["error"]
    unknown = httpx.post(f"{url}/api/v1/predict", json={"data": raw, "model": "nosuch"})
    assert unknown.status_code == 404
    assert "available: " in unknown.json()["error"] and "temp_anomaly" in unknown.json()["error"]


def test_demo_summary_reads_right_without_a_terminal(demo) -> None:  # type: ignore[no-untyped-def]
    _, _, _, log = demo
    printed = _printed(log)
    assert "this folder holds an earlier run" in printed
    before_summary = printed.split("demo summary")[0]
    assert "generating sample data (30,000 telemetry events)" in before_summary
    assert "running pipeline telemetry (30,005 events)" in before_summary
    assert "n/a / n/a" in printed  # 30,000 events inject no anomalies: no 0.0% figures
    assert "0.0% / 0.0%" not in printed
    values = " ".join(
        row.split("│")[2].strip() for row in printed.splitlines() if row.count("│") == 3
    )
    assert "promote: promoted telemetry_iforest v1" in values  # what the task did, not "success"
    assert "warning: telemetry_iforest v1 is in production with f1" in " ".join(printed.split())
    curls = [line for line in printed.splitlines() if "curl -X POST" in line]
    assert len(curls) == 2 and all(line.rstrip().endswith("}'") for line in curls)  # unwrapped
    assert "Traceback" not in printed


def _counter(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_count_the_work_of_the_demo(demo) -> None:  # type: ignore[no-untyped-def]
    url, _, _, _ = demo
    httpx.post(f"{url}/api/v1/predict", json={"data": "my invoice is wrong"})
    text = httpx.get(f"{url}/metrics").text
    assert _counter(text, "sluice_events_in_total", pipeline="telemetry") == 30_005
    assert _counter(text, "sluice_events_out_total", pipeline="telemetry") == 30_000
    assert _counter(text, "sluice_dead_letters_total", pipeline="telemetry") == 5
    assert _counter(text, "sluice_anomalies_total", model="temp_anomaly") > 0
    assert _counter(text, "sluice_incidents_total", model="temp_anomaly") > 0
    summary = httpx.get(f"{url}/api/v1/actions/summary").json()["by_rule"]
    delivered = sum(r["count"] for r in summary if r["status"] == "delivered")
    assert delivered > 0  # every delivery the outbox holds was counted by the process that made it
    assert _counter(text, "sluice_action_deliveries_total", outcome="delivered") == delivered
    assert _counter(text, "sluice_job_runs_total", job="nightly", state="success") == 1
    assert _counter(text, "sluice_drift_events_total", model="temp_anomaly") > 0
    assert _counter(text, "sluice_checkpoint_seconds_count", pipeline="telemetry") > 0
    assert _counter(text, "sluice_epoch_events_count", pipeline="telemetry") > 0
    assert _counter(text, "sluice_predict_seconds_count", model="ticket_category") >= 1
    assert 'model="default"' not in text


def test_demo_tables_are_queryable(demo) -> None:  # type: ignore[no-untyped-def]
    url, _, _, _ = demo
    r = httpx.post(f"{url}/api/v1/query", json={"sql": "select count(*) as n from telemetry"})
    assert r.status_code == 200, r.text
    assert "30000" in r.text.replace(",", "")


def _browser(p, port: int):  # type: ignore[no-untyped-def]
    """Debian's chromium with every host but the demo's unresolvable (no network)."""
    chromium = shutil.which("chromium")
    require_service(chromium is not None, "Debian chromium")
    offline = "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"
    return p.chromium.launch(executable_path=chromium, args=[*CHROMIUM_ARGS, offline])


def _watched(page, url: str) -> tuple[list[str], list[str]]:  # type: ignore[no-untyped-def]
    """Collect the page's errors (uncaught and console) and its requests leaving the machine."""
    errors: list[str] = []
    outside: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    _local_only(page, url, outside)
    return errors, outside


def _local_only(page, url: str, outside: list[str]) -> None:  # type: ignore[no-untyped-def]
    """Abort (and remember) every request that would leave the machine."""

    def route(r):  # type: ignore[no-untyped-def]
        if r.request.url.startswith(url) or r.request.url.startswith("data:"):
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()

    page.route("**/*", route)


def test_api_docs_load_with_the_network_blocked(demo) -> None:  # type: ignore[no-untyped-def]
    url, _, _, _ = demo
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = _browser(p, int(url.rsplit(":", 1)[1]))
        page = browser.new_page()
        errors, outside = _watched(page, url)
        page.goto(url + "/docs")
        page.wait_for_selector(".swagger-ui .opblock-tag", timeout=30_000)
        tags = page.locator(".swagger-ui .opblock-tag").all_inner_texts()
        operations = page.locator(".swagger-ui .opblock").count()
        title = page.locator(".swagger-ui .title").inner_text()
        browser.close()
    assert outside == [] and errors == []
    assert "Sluice API" in title
    assert any("predict" in t for t in tags) and operations > 20


ARTIFACTS = Path(
    os.environ.get("SLUICE_TEST_ARTIFACTS", Path(tempfile.gettempdir()) / "sluice-test-artifacts")
)


def test_dashboard_shows_every_panel_after_the_demo(demo, record_property) -> None:  # type: ignore[no-untyped-def]
    url, _, _, _ = demo
    from playwright.sync_api import sync_playwright

    shots = ARTIFACTS / "dashboard"
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = _browser(p, int(url.rsplit(":", 1)[1]))
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        errors, outside = _watched(page, url)
        page.goto(url + "/")
        page.wait_for_function("document.body.dataset.loaded === 'true'")
        page.wait_for_function("document.querySelectorAll('#incidents tbody tr').length > 0")
        page.wait_for_function("document.querySelectorAll('#drift tbody tr').length > 0")
        page.wait_for_function("document.getElementById('series-title').textContent.includes('=')")
        text = {
            panel: page.inner_text(f'[data-panel="{panel}"]')
            for panel in (
                "pipelines",
                "throughput",
                "incidents",
                "series",
                "actions",
                "models",
                "jobs",
                "dlq",
                "streams",
            )
        }
        y_ticks = page.evaluate(
            "() => { const c = document.getElementById('chart'); return c.width > 0; }"
        )
        page.screenshot(path=str(shots / "dashboard.png"), full_page=True)
        # click-through: a pipeline, a key, a job run
        page.click("#pipelines tbody a.link >> text=telemetry")
        page.wait_for_function(
            "document.getElementById('detail-title').textContent.includes('telemetry')"
        )
        pipeline_detail = page.inner_text("#detail")
        page.screenshot(path=str(shots / "pipeline-detail.png"))
        key = page.locator("#incidents tbody a.link").nth(1)
        key_name = key.inner_text()
        key.click()
        page.wait_for_function(
            f"document.getElementById('series-title').textContent.includes('{key_name}')"
        )
        page.screenshot(path=str(shots / "key-drill-down.png"))
        page.click("#jobs .sq.success >> nth=0")
        page.wait_for_function(
            "document.getElementById('detail-title').textContent.includes('run')"
        )
        run_detail = page.inner_text("#detail")
        page.screenshot(path=str(shots / "job-run.png"))
        browser.close()
    for name in sorted(shots.glob("*.png")):
        print(f"screenshot: {name}")
        record_property(f"screenshot-{name.stem}", str(name))
    assert errors == [] and outside == []
    assert y_ticks
    pipelines = text["pipelines"]
    assert "telemetry" in pipelines and "tickets" in pipelines and "30,005" in pipelines
    assert "telemetry" in text["throughput"] and "tickets" in text["throughput"]
    incidents = text["incidents"]
    assert "temp_anomaly" in incidents and "dev-" in incidents and "sigma" in incidents
    assert "device_id = dev-" in text["series"] and "alerted" in text["series"]
    actions = text["actions"]
    assert "page-oncall" in actions and "route-urgent" in actions and "delivered" in actions
    models = text["models"]
    assert "ticket_category" in models and "accuracy" in models and "production" in models
    assert "temp_anomaly" in models and "page_hinkley" in models + text["models"].lower()
    assert "nightly" in text["jobs"] and "success" in text["jobs"]
    assert "malformed JSON" in text["dlq"] and "decode" in text["dlq"]
    assert "telemetry" in text["streams"]
    assert "Recent runs" in pipeline_detail and "Per-partition lag" in pipeline_detail
    assert "30,005" in pipeline_detail
    for task in ("train", "promote", "compact", "check"):
        assert task in run_detail
    assert "all checks passed" in run_detail
    sizes = [len((shots / f"{n}.png").read_bytes()) for n in ("dashboard", "job-run")]
    assert min(sizes) > 30_000


def test_sigterm_stops_the_service_cleanly(demo) -> None:  # type: ignore[no-untyped-def]
    _, _, proc, _ = demo
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
