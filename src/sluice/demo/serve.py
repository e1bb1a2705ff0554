"""Serve the demo: the API, the dashboard and the demo pipelines (plus a live HTTP one)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from sluice.core.settings import Settings

LIVE = """\
# Live telemetry pushed over HTTP: POST /api/v1/ingest/telemetry (JSON, array or NDJSON).
name: telemetry_live
source: {type: log, stream: telemetry}
schema:
  device_id: {type: string, required: true}
  ts: timestamp
  temperature: double
  pressure: double
  vibration: double
  status: string
event_time: ts
batch: {max_rows: 50000, max_latency: 500ms}
transforms:
  - derive: {temp_c: "round((temperature - 32) * 5 / 9, 3)"}
models:
  - {name: live_anomaly, type: online_anomaly, key: device_id,
     features: [temp_c, pressure, vibration]}
sinks:
  - {type: lake, table: telemetry_live}
"""


SAMPLE_TEXT = '{"data": "sample input"}'
SAMPLE_RECORD = (
    '{"data": {"device_id": "dev-0001", "temperature": 70.5, "pressure": 101.2, "vibration": 2.5}}'
)


def serve_demo(
    console: Console, settings: Settings, files: dict[str, Path], *, port: int = 5000
) -> None:
    """Serve until Ctrl-C."""
    from sluice.service.serve import serve

    live = settings.home / "demo" / "telemetry_live.yaml"
    live.write_text(LIVE, encoding="utf-8")

    def ready(url: str) -> None:
        console.print(f"\n[green]Dashboard[/] {url}/   [green]API docs[/] {url}/docs")
        console.print("Try (each command on one line, to paste as it is):")
        for body in (SAMPLE_TEXT, SAMPLE_RECORD):
            console.print(
                f"  curl -X POST {url}/api/v1/predict -d '{body}'",
                soft_wrap=True,
                highlight=False,
                markup=False,
            )
        console.print("Ctrl-C to stop.")

    serve(settings, [*files.values(), live], host="127.0.0.1", port=port, on_ready=ready)
