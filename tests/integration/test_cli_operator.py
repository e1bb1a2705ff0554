"""What an operator touches on the command line (issue 17): each user error is one line and a
non-zero exit, never a traceback; predict takes raw records; dead letters replay from the CLI.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from tests.integration.test_cli import sluice

PIPELINE = """\
name: ops
source: {{type: log, stream: events}}
schema:
  device_id: {{type: string, required: true}}
  ts: timestamp
  temperature: double
event_time: ts
transforms:
  - filter: "temperature < 100"
  - derive: {{temp_c: "round((temperature - 32) * 5 / 9, 3)"}}
models:
  - {{name: ops_anomaly, type: online_anomaly, key: device_id, features: [temp_c]}}
actions:
  - name: hot
    when: "temp_c > 30"
    type: log
    key: device_id
    path: "{home}/hot.jsonl"
    payload: {{device: "{{{{ device_id }}}}"}}
sinks:
  - {{type: lake, table: ops}}
"""
GOOD = [
    {
        "device_id": f"d{i % 3}",
        "ts": f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}Z",
        "temperature": 60.0 + (i % 50),
    }
    for i in range(120)
]
BAD = [{"device_id": "x", "ts": "2026-01-01T00:00:00Z", "temperature": "hot"}] * 3


def one_error_line(result: object) -> str:
    """The single ``error: ...`` line of a failed command (and no traceback)."""
    assert result.returncode != 0, result.stdout  # type: ignore[attr-defined]
    err = result.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in err and "Traceback" not in result.stdout  # type: ignore[attr-defined]
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SLUICE_HOME where the ``ops`` pipeline ran twice over a log stream."""
    home = tmp_path_factory.mktemp("ops")
    (home / "ops.yaml").write_text(PIPELINE.format(home=home), encoding="utf-8")
    events = home / "events.jsonl"
    events.write_text("\n".join(json.dumps(r) for r in GOOD + BAD) + "\n", encoding="utf-8")
    ingest = sluice(home, "ingest", "events", str(events))
    assert ingest.returncode == 0, ingest.stderr
    assert "appended 123 event(s)" in ingest.stdout
    for _ in range(2):  # the second run finds nothing new: the status must still count the first
        run = sluice(home, "run", str(home / "ops.yaml"), "--until-idle", "--quiet")
        assert run.returncode == 0, run.stderr
    return home


def test_query_with_an_unknown_format_is_one_line(home: Path) -> None:
    line = one_error_line(sluice(home, "query", "select 1", "--format", "xml"))
    assert line == "error: unknown format 'xml'; use table, json, csv"
    one_error_line(sluice(home, "dlq", "list", "--format", "xml"))
    one_error_line(sluice(home, "actions", "list", "--format", "xml"))


def test_missing_table_lists_the_tables(home: Path) -> None:
    line = one_error_line(sluice(home, "query", "select * from nosuch"))
    assert "nosuch does not exist" in line and "Tables: " in line and "ops" in line


def test_predict_takes_a_raw_record_and_names_the_models(home: Path) -> None:
    raw = {"device_id": "d1", "ts": "2026-01-01T01:00:00Z", "temperature": 70.0}
    out = sluice(home, "predict", json.dumps(raw))
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert body["model"] == "ops_anomaly" and 0.0 <= body["prediction"]["score"] <= 1.0
    hot = sluice(home, "predict", json.dumps([raw, {**raw, "temperature": 120.0}]))
    assert json.loads(hot.stdout)["predictions"][1] == {"filtered": True}  # the pipeline's filter
    line = one_error_line(sluice(home, "predict", json.dumps(raw), "--model", "nosuch"))
    assert "no model named 'nosuch'; available: ops_anomaly" in line
    line = one_error_line(sluice(home, "predict", '{"device_id": "d1"}', "--model", "ops_anomaly"))
    assert "model 'ops_anomaly'" in line


def test_pipelines_status_counts_every_run_and_honours_the_file(home: Path) -> None:
    out = sluice(home, "pipelines", "status", str(home / "ops.yaml"))
    assert out.returncode == 0, out.stderr
    row = next(line for line in out.stdout.splitlines() if line.startswith("│ ops"))
    assert "123" in row and "│ 3 " in row  # 123 events in over both runs, 3 dead-lettered
    other = home / "other.yaml"
    other.write_text(PIPELINE.format(home=home).replace("name: ops", "name: other"), "utf-8")
    line = one_error_line(sluice(home, "pipelines", "status", str(other)))
    assert "'other' has not run yet" in line


def test_pipelines_status_names_the_kafka_extra_and_fails(home: Path, tmp_path: Path) -> None:
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "confluent_kafka.py").write_text("raise ImportError('not installed here')\n")
    kafka = tmp_path / "k.yaml"
    kafka.write_text(
        "name: k\nsource: {type: kafka, topic: t, bootstrap_servers: '127.0.0.1:1'}\n"
        "sinks: [{type: lake, table: k}]\n",
        encoding="utf-8",
    )
    result = sluice(home, "pipelines", "status", str(kafka), pythonpath=str(shim))
    line = one_error_line(result)
    assert 'pip install "sluice[kafka]"' in line


def test_actions_list_pages_filters_and_shows_keys(home: Path) -> None:
    everything = json.loads(sluice(home, "actions", "list", "--format", "json").stdout)
    assert len(everything) > 3 and {r["key"] for r in everything} <= {"d0", "d1", "d2"}
    first = sluice(home, "actions", "list", "--limit", "2")
    assert first.returncode == 0, first.stderr
    assert f"showing 1-2 of {len(everything)}; next page: --offset 2" in first.stdout
    assert "│ hot " in first.stdout and "│ d" in first.stdout  # rule and key columns filled
    second = json.loads(
        sluice(home, "actions", "list", "--limit", "2", "--offset", "2", "--format", "json").stdout
    )
    assert [r["id"] for r in second] == [r["id"] for r in everything[2:4]]
    none = sluice(home, "actions", "list", "--rule", "nosuch")
    assert "showing none of 0" in none.stdout


def test_dlq_replay_from_the_command_line(home: Path) -> None:
    assert "replay" in sluice(home, "dlq", "--help").stdout
    first = sluice(home, "dlq", "replay", "events", "--pipeline", "ops")
    assert first.returncode == 0, first.stderr
    assert "replayed 3 of 3 dead letter(s) to events" in first.stdout
    again = sluice(home, "dlq", "replay", "events")
    assert "replayed 0 of 3" in again.stdout  # each dead letter is replayed at most once
    line = one_error_line(sluice(home, "dlq", "replay", "nosuch"))
    assert "stream 'nosuch' does not exist (streams: events)" in line


def test_ingest_with_a_bad_stream_name_is_one_line(home: Path) -> None:
    line = one_error_line(sluice(home, "ingest", "../x", "-", stdin='{"a": 1}\n'))
    assert "invalid stream name '../x'" in line


def test_serve_on_a_busy_port_says_use_another(home: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = sluice(home, "serve", "--port", str(port))
    line = one_error_line(result)
    assert line == f"error: port {port} on 127.0.0.1 is in use; choose another with --port"
    assert "serving" not in result.stdout
