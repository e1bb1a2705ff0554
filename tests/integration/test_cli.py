"""The command line end to end: validate, run (bad input accounting), query, dlq, models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PIPELINE = """\
name: cli
source: {{type: file, path: "{data}", format: json}}
schema:
  device_id: {{type: string, required: true}}
  ts: timestamp
  temperature: double
event_time: ts
transforms:
  - filter: "temperature < 100"
  - derive: {{temp_c: "(temperature - 32) * 5 / 9"}}
sinks:
  - {{type: lake, table: cli}}
  - {{type: warehouse, table: cli}}
"""

GOOD = [
    {"device_id": f"d{i % 3}", "ts": f"2026-01-01T00:00:{i:02d}Z", "temperature": 60 + i}
    for i in range(50)
]
BAD = [
    b'{"device_id": "x", "ts": "2026-01-01T00:00:00Z", "temperature": "hot"}',
    b'{"ts": "2026-01-01T00:00:00Z", "temperature": 1.0}',
    b'{"device_id": "y", "ts": "yesterday", "temperature": 1.0}',
    b"not json",
    b"[1, 2, 3]",
    b'{"device_id": "z", "ts": "2026-01-01T00:00:00Z", "temperature": 1.0, "extra": {"a": 1}}',
    b'{"device_id": "\xff\xfe", "ts": "2026-01-01T00:00:00Z"}',
    b'{"device_id": "t", "ts": "2026-01-01T00:00:00Z", "temperature": 7',  # truncated last line
]


def sluice(
    home: Path, *args: str, pythonpath: str | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a subprocess with its own SLUICE_HOME (``pythonpath`` goes first)."""
    env = {**os.environ, "SLUICE_HOME": str(home), "COLUMNS": "200"}
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [pythonpath, env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "sluice.cli", *args],
        env=env,
        text=True,
        input=stdin if stdin is not None else "",
        capture_output=True,
        timeout=300,
    )


@pytest.fixture
def pipeline(tmp_path: Path) -> Path:
    data = tmp_path / "events.jsonl"
    lines = [json.dumps(r).encode() for r in GOOD] + BAD
    data.write_bytes(b"\n".join(lines))  # no trailing newline: the last line is truncated
    path = tmp_path / "cli.yaml"
    path.write_text(PIPELINE.format(data=data))
    return path


def test_run_accounts_for_every_input_row(pipeline: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = sluice(home, "run", str(pipeline), "--until-idle", "--quiet")
    assert result.returncode == 0, result.stderr
    out = sluice(home, "query", "select count(*) as n from cli", "--format", "json")
    landed = json.loads(out.stdout)[0]["n"]
    filtered = sum(1 for r in GOOD if r["temperature"] >= 100)
    assert landed == len(GOOD) - filtered + 1  # the row with an unknown extra field is good
    dlq = json.loads(sluice(home, "dlq", "list", "--format", "json", "--limit", "100").stdout)
    assert len(dlq) == len(BAD) - 1
    reasons = " | ".join(sorted(r["reason"] for r in dlq))
    for expected in (
        "expected double",
        "missing required field 'device_id'",
        "not a timestamp",
        "malformed JSON",
        "not a JSON object",
        "invalid UTF-8",
    ):
        assert expected in reasons
    assert all(r["stage"] == "decode" and r["raw"] for r in dlq)
    assert "events in" in result.stdout and "dead-lettered" in result.stdout
    # in = out + filtered + dead-lettered
    assert len(GOOD) + len(BAD) == landed + filtered + len(dlq)


def test_rerun_is_idempotent(pipeline: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    for _ in range(2):
        assert sluice(home, "run", str(pipeline), "--until-idle", "-q").returncode == 0
    out = sluice(home, "query", "select count(*) as n from lake.cli", "--format", "json")
    kept = sum(1 for r in GOOD if r["temperature"] < 100) + 1
    assert json.loads(out.stdout)[0]["n"] == kept


@pytest.mark.parametrize("command", ["validate", "run"])
def test_broken_pipeline_file_exits_nonzero_with_file_and_line(
    command: str, tmp_path: Path
) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(
        "name: broken\nsource: {type: file, path: x.jsonl}\ntransforms:\n"
        "  - window: {key: k, size: 1 minute, aggregate: {n: count(*)}}\n"
    )
    result = sluice(tmp_path / "home", command, str(path))
    assert result.returncode == 2
    assert f"{path}:4: transforms[0].window.size: invalid duration" in result.stderr
    assert "Traceback" not in result.stderr


def test_validate_reports_bad_sql(tmp_path: Path) -> None:
    path = tmp_path / "sql.yaml"
    path.write_text(
        "name: s\nsource: {type: file, path: x.jsonl}\nschema: {a: double}\n"
        "transforms:\n  - derive: {b: 'a + )'}\n"
    )
    result = sluice(tmp_path / "home", "validate", str(path))
    assert result.returncode == 2
    assert "transforms[0].derive" in result.stderr


def test_query_refuses_writes(tmp_path: Path) -> None:
    result = sluice(tmp_path / "home", "query", "create table t as select 1")
    assert result.returncode == 2
    assert "read-only" in result.stderr or "not allowed" in result.stderr
