"""``sluice validate`` builds every stage, binds it to its input, runs nothing, changes nothing."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sluice.cli import app

PIPELINE = """\
name: checked
source: {{type: file, path: "{data}", format: json}}
schema:
  device_id: {{type: string, required: true}}
  ts: timestamp
  temperature: double
  pressure: double
event_time: ts
transforms:
  - filter: "temperature < 1000"
  - derive: {{temp_c: "(temperature - 32) * 5 / 9"}}
models:
  - {{name: temp_anomaly, type: online_anomaly, features: [temp_c, pressure], key: device_id}}
actions:
  - {{name: page, when: "temp_anomaly_anomaly OR temp_c > 40", type: webhook, url: "{url}"}}
sinks:
  - {{type: lake, table: checked}}
  - {{type: warehouse, table: checked}}
"""


class Hook(http.server.BaseHTTPRequestHandler):
    """A webhook receiver that records every POST."""

    calls: list[bytes] = []

    def do_POST(self) -> None:
        """Record the body and answer 200."""
        Hook.calls.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        """Keep the test output clean."""


@pytest.fixture
def receiver() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Hook.calls = []
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()


def write_pipeline(tmp_path: Path, url: str = "http://127.0.0.1:9/hook", **edits: str) -> Path:
    data = tmp_path / "events.jsonl"
    rows = [
        {
            "device_id": f"d{i % 2}",
            "ts": f"2026-01-01T00:00:{i:02d}Z",
            "temperature": 60.0 + i,
            "pressure": 1.0,
        }
        for i in range(40)
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = PIPELINE.format(data=data, url=url)
    for old, new in edits.items():
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "pipeline.yaml"
    path.write_text(text)
    return path


def cli(home: Path, *args: str) -> tuple[int, str]:
    """Run the CLI in-process with its own SLUICE_HOME; return the exit code and output."""
    result = CliRunner().invoke(app, list(args), env={"SLUICE_HOME": str(home), "COLUMNS": "300"})
    return result.exit_code, result.output


def snapshot(home: Path) -> dict[str, str]:
    """A hash of every file under ``home``."""
    return {
        str(p.relative_to(home)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(home.rglob("*"))
        if p.is_file()
    }


def test_validate_changes_no_byte_and_delivers_nothing(tmp_path: Path, receiver: str) -> None:
    home = tmp_path / "home"
    # the run's webhook target refuses connections: its actions stay pending in the outbox
    code, out = cli(home, "run", str(write_pipeline(tmp_path)), "--until-idle", "-q")
    assert code == 0, out
    before = snapshot(home)
    assert any(name.endswith(".db") for name in before)
    # validating with a reachable target must not deliver them (nor touch any file)
    code, out = cli(home, "validate", str(write_pipeline(tmp_path, url=receiver)))
    assert code == 0, out
    assert "ok" in out
    assert snapshot(home) == before
    assert Hook.calls == []


def test_validate_creates_nothing_on_a_fresh_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    code, out = cli(home, "validate", str(write_pipeline(tmp_path)))
    assert code == 0, out
    assert not home.exists()


def line_of(path: Path, text: str) -> int:
    """The 1-based line of ``path`` that contains ``text``."""
    lines = path.read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if text in line)


@pytest.mark.parametrize(
    ("edits", "marker", "key", "message"),
    [
        (
            {"type: warehouse": "type: warehous"},
            "warehous",
            "sinks[1].type",
            "unknown sink type 'warehous'",
        ),
        (
            {"(temperature - 32)": "(temprature - 32)"},
            "temprature",
            "transforms[1].derive",
            "temprature",
        ),
        (
            {"temperature < 1000": "temperatur < 1000"},
            "temperatur <",
            "transforms[0].filter",
            "temperatur",
        ),
        (
            {"features: [temp_c, pressure]": "features: [temp_f, pressure]"},
            "temp_f",
            "models[0].features",
            "no stage produces 'temp_f'",
        ),
        (
            {"type: online_anomaly": "type: online_anomoly"},
            "online_anomoly",
            "models[0].type",
            "unknown model type 'online_anomoly'",
        ),
        (
            {"(temperature - 32) * 5 / 9": "(temperature - 32) * 5 / 9 +"},
            "9 +",
            "transforms[1].derive",
            "syntax error",
        ),
        ({"temp_c > 40": "temp_k > 40"}, "temp_k", "actions[0].when", "temp_k"),
    ],
    ids=[
        "sink-type",
        "derive-column",
        "filter-column",
        "model-feature",
        "model-type",
        "sql-syntax",
        "action-when",
    ],
)
def test_validate_rejects_with_file_line_and_key(
    tmp_path: Path, edits: dict[str, str], marker: str, key: str, message: str
) -> None:
    path = write_pipeline(tmp_path, **edits)
    code, out = cli(tmp_path / "home", "validate", str(path))
    assert code == 2, out
    flat = " ".join(out.split())
    assert f"{path}:{line_of(path, marker)}: {key}" in flat
    assert message in flat
    assert not (tmp_path / "home").exists()


def test_validate_rejects_an_unknown_source_type_listing_the_available_ones(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: bad\nsource: {type: mqqt, topic: a}\nsinks: [{type: lake, table: bad}]\n"
    )
    code, out = cli(tmp_path / "home", "validate", str(path))
    flat = " ".join(out.split())
    assert code == 2, out
    assert f"{path}:2: source.type: unknown source type 'mqqt'; available: " in flat
    available = flat.split("available: ", 1)[1].split()
    assert {"file", "generator", "kafka", "log", "mqtt", "sql"} <= {
        name.strip(",") for name in available
    }
    assert not (tmp_path / "home").exists()


@pytest.mark.parametrize(
    "source",
    [
        '{type: sql, url: "postgresql://u:pw@127.0.0.1:1/db", table: readings, cursor: id}',
        '{type: sql, url: "sqlite:///nowhere.db", query: "SELECT * FROM t WHERE id > :cursor",'
        " cursor: id}",
        '{type: mqtt, url: "mqtt://127.0.0.1:1", topic: "$share/g/plant/+/telemetry"}',
    ],
    ids=["sql-table", "sql-query", "mqtt"],
)
def test_validate_accepts_sql_and_mqtt_sources_without_connecting(
    tmp_path: Path, source: str
) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(f"name: ok\nsource: {source}\nsinks: [{{type: lake, table: ok}}]\n")
    code, out = cli(tmp_path / "home", "validate", str(path))
    assert code == 0, out
    assert not (tmp_path / "home").exists()


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ('{type: sql, url: "oracle://h/db", table: t, cursor: id}', "url must start with"),
        ('{type: sql, url: "sqlite:///x.db", table: t}', "source.cursor"),
        ("{type: mqtt, topic: a, qos: 3}", "source.qos"),
    ],
    ids=["sql-url", "sql-cursor", "mqtt-qos"],
)
def test_validate_rejects_bad_sql_and_mqtt_options_at_their_line(
    tmp_path: Path, source: str, message: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(f"name: bad\nsource: {source}\nsinks: [{{type: lake, table: bad}}]\n")
    code, out = cli(tmp_path / "home", "validate", str(path))
    flat = " ".join(out.split())
    assert code == 2, out
    assert f"{path}:2: " in flat and message in flat
