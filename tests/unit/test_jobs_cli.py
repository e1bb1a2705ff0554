"""``sluice jobs ...`` and ``sluice airflow export`` through the typer apps."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from sluice.cli.jobs import airflow_app, app
from sluice.storage.db import dispose_all

JOBS = """
jobs:
  - name: nightly
    schedule: "0 2 * * *"
    allow_shell: true
    tasks:
      - {name: hello, type: shell, command: "echo hello {{ ds }}"}
      - {name: after, type: sql, sql: "SELECT 7 AS seven", depends_on: [hello]}
"""


@pytest.fixture
def jobs_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SLUICE_HOME", str(tmp_path / "home"))
    path = tmp_path / "jobs.yaml"
    path.write_text(JOBS)
    yield path
    dispose_all()


def test_run_runs_logs_list_backfill(jobs_file: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["run", "nightly", "--jobs", str(jobs_file)])
    assert result.exit_code == 0, result.output
    assert "hello #1: success" in result.output and "after #1: success" in result.output
    result = runner.invoke(app, ["runs", "nightly"])
    assert result.exit_code == 0 and "success" in result.output
    result = runner.invoke(app, ["logs", "1"])
    assert result.exit_code == 0 and "hello" in result.output and "seven" in result.output
    result = runner.invoke(app, ["list", "--jobs", str(jobs_file)])
    assert result.exit_code == 0 and "0 2 * * *" in result.output
    args = [
        "backfill",
        "nightly",
        "--start",
        "2026-01-01",
        "--end",
        "2026-01-03",
        "--jobs",
        str(jobs_file),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.output.count("run ") == 2
    assert "already has a run" in runner.invoke(app, args).output
    result = runner.invoke(
        app, ["run-task", "nightly", "hello", "--jobs", str(jobs_file), "--ds", "2026-05-06"]
    )
    assert result.exit_code == 0 and "hello 2026-05-06" in result.output


def test_bad_file_and_unknown_job(tmp_path: Path, jobs_file: Path) -> None:
    runner = CliRunner()
    bad = tmp_path / "bad.yaml"
    bad.write_text("jobs:\n  - name: x\n    tasks:\n      - {name: a, type: sql}\n")
    result = runner.invoke(app, ["run", "x", "--jobs", str(bad)])
    assert result.exit_code == 2
    assert f"{bad}:4:" in result.output
    result = runner.invoke(app, ["run", "nope", "--jobs", str(jobs_file)])
    assert result.exit_code == 2 and "no job named 'nope'" in result.output


def test_airflow_export_command(tmp_path: Path, jobs_file: Path) -> None:
    result = CliRunner().invoke(
        airflow_app, ["export", str(tmp_path / "dags"), "--jobs", str(jobs_file)]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "dags" / "sluice_nightly.py").is_file()
