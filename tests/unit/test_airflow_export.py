"""``sluice airflow export``: generated DAG files compile and wire schedule/retries/deps 1:1.

Airflow is not installed in the unit-test environment, so the import test is *structural*:
a tiny fake ``airflow.sdk`` (written to tmp_path and put on sys.path) records every DAG
and operator the generated file builds. Loading the DAGs in a real Airflow is a separate,
heavier test (own virtualenv) that this file does not cover.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

import pytest

import sluice.airflow
from sluice.core.errors import MissingDependencyError
from sluice.orchestration.airflow_export import export_dags
from sluice.orchestration.scheduler import due_intervals
from sluice.orchestration.spec import load_jobs

JOBS = """
jobs:
  - name: nightly-retrain
    schedule: {cron: "0 2 * * *", timezone: Europe/Paris}
    start_date: 2026-01-01T00:00:00Z
    retries: 3
    retry_delay: 5m
    timeout: 1h
    params: {table: events}
    tasks:
      - {name: train, type: train_model, model: m, kind: isolation_forest, table: events,
         features: [value]}
      - {name: promote, type: promote_if_better, model: m, metric: f1, depends_on: [train],
         retries: 0}
      - {name: compact, type: compact, table: events}
      - {name: check, type: quality_check, table: events, min_rows: 1,
         depends_on: [promote, compact]}
  - name: hourly
    schedule: {every: 1h}
    catchup: true
    tasks: [{name: q, type: sql, sql: "SELECT 1", timeout: 30s}]
"""

FAKE_SDK = """
RECORDED = {"dags": [], "operators": []}
_current = []


class DAG:
    def __init__(self, **kwargs):
        self.kwargs = kwargs
        RECORDED["dags"].append(self)

    def __enter__(self):
        _current.append(self)
        return self

    def __exit__(self, *exc):
        _current.pop()


class BaseOperator:
    def __init__(self, task_id, **kwargs):
        self.task_id = task_id
        self.kwargs = kwargs
        self.dag = _current[-1] if _current else None
        self.downstream = []
        RECORDED["operators"].append(self)

    def __rshift__(self, other):
        self.downstream.append(other.task_id)
        return other


class CronDataIntervalTimetable:
    def __init__(self, cron, timezone):
        self.cron, self.timezone = cron, timezone


class DeltaDataIntervalTimetable:
    def __init__(self, delta):
        self.delta = delta
"""


@pytest.fixture
def exported(tmp_path: Path) -> tuple[list[Path], Path]:
    jobs_file = tmp_path / "jobs.yaml"
    jobs_file.write_text(JOBS)
    return export_dags(load_jobs(jobs_file), tmp_path / "dags", jobs_file), jobs_file


@pytest.fixture
def fake_airflow(tmp_path: Path):
    root = tmp_path / "fake"
    (root / "airflow" / "sdk").mkdir(parents=True)
    (root / "airflow" / "__init__.py").write_text("")
    (root / "airflow" / "sdk" / "__init__.py").write_text(FAKE_SDK)
    sys.path.insert(0, str(root))
    sluice.airflow._cache.clear()
    try:
        yield importlib.import_module("airflow.sdk")
    finally:
        sys.path.remove(str(root))
        for name in [n for n in sys.modules if n == "airflow" or n.startswith("airflow.")]:
            del sys.modules[name]
        sluice.airflow._cache.clear()


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_exported_files_compile_and_map_the_job(exported: tuple[list[Path], Path]) -> None:
    paths, jobs_file = exported
    assert sorted(p.name for p in paths) == ["sluice_hourly.py", "sluice_nightly_retrain.py"]
    for path in paths:
        compile(path.read_text(), str(path), "exec")
    text = paths[0].read_text()
    assert "CronDataIntervalTimetable('0 2 * * *', timezone='Europe/Paris')" in text
    assert '"retries": 3' in text and "timedelta(seconds=300)" in text
    assert "execution_timeout" in text
    assert str(jobs_file.parent) not in text  # no absolute path of the exporting machine
    assert "'../jobs.yaml'" in text
    assert "tasks['train'] >> tasks['promote']" in text
    assert "DeltaDataIntervalTimetable(timedelta(seconds=3600))" in paths[1].read_text()


def test_exported_dag_builds_with_fake_airflow(exported, fake_airflow) -> None:
    paths, jobs_file = exported
    module = _load(paths[0])
    (dag,) = fake_airflow.RECORDED["dags"]
    assert dag.kwargs["dag_id"] == "sluice_nightly_retrain"
    schedule = dag.kwargs["schedule"]
    assert type(schedule).__name__ == "CronDataIntervalTimetable"
    assert (schedule.cron, schedule.timezone) == ("0 2 * * *", "Europe/Paris")
    assert dag.kwargs["catchup"] is False
    assert dag.kwargs["default_args"]["retries"] == 3
    assert dag.kwargs["default_args"]["retry_delay"] == timedelta(minutes=5)
    assert dag.kwargs["default_args"]["execution_timeout"] == timedelta(hours=1)
    assert dag.kwargs["params"] == {"table": "events"}
    # start_date 00:00Z is 01:00 in Paris; the first 02:00 Paris run starts the first interval
    assert module.START_DATE.utcoffset() == timedelta(hours=1)
    assert module.START_DATE.astimezone(UTC) == datetime(2026, 1, 1, 1, tzinfo=UTC)
    ops = {op.task_id: op for op in fake_airflow.RECORDED["operators"]}
    assert set(ops) == {"train", "promote", "compact", "check"}
    assert all(op.dag is dag for op in ops.values())
    assert ops["train"].downstream == ["promote"]
    assert ops["promote"].downstream == ["check"] and ops["compact"].downstream == ["check"]
    assert ops["promote"].kwargs["retries"] == 0
    assert ops["check"].sluice_task == "check" and ops["check"].sluice_job == "nightly-retrain"
    assert ops["check"].jobs_file == str(jobs_file.absolute())


def test_exported_dags_find_the_jobs_file_where_they_are_moved(
    exported, fake_airflow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths, jobs_file = exported
    moved = tmp_path / "elsewhere" / "deploy"
    (moved / "dags").mkdir(parents=True)
    (moved / "jobs.yaml").write_text(jobs_file.read_text())
    target = moved / "dags" / paths[0].name
    target.write_text(paths[0].read_text())
    monkeypatch.delenv("SLUICE_JOBS_FILE", raising=False)
    assert str(moved / "jobs.yaml") == _load(target).JOBS_FILE
    monkeypatch.setenv("SLUICE_JOBS_FILE", "/opt/sluice/jobs.yaml")
    assert _load(target).JOBS_FILE == "/opt/sluice/jobs.yaml"


def test_operator_runs_the_task_in_a_subprocess(tmp_path: Path, fake_airflow, monkeypatch) -> None:
    out = tmp_path / "ran.txt"
    jobs_file = tmp_path / "jobs.yaml"
    jobs_file.write_text(f"""
jobs:
  - name: j
    allow_shell: true
    tasks: [{{name: t, type: shell, command: "echo {{{{ ds }}}} > {out}"}}]
""")
    monkeypatch.setenv("SLUICE_HOME", str(tmp_path / "home"))
    operator = sluice.airflow.SluiceOperator(
        task_id="t", job="j", task="t", jobs_file=str(jobs_file)
    )

    class Log:
        def info(self, *args: object) -> None:
            pass

    operator.log = Log()
    start = datetime(2026, 2, 3, tzinfo=UTC)
    operator.execute({"data_interval_start": start, "data_interval_end": start + timedelta(1)})
    assert out.read_text().strip() == "2026-02-03"
    failing = sluice.airflow.SluiceOperator(
        task_id="x", job="j", task="missing", jobs_file=str(jobs_file)
    )
    failing.log = Log()
    with pytest.raises(RuntimeError, match="exit status"):
        failing.execute({"data_interval_start": start})


def test_interval_schedules_start_where_sluice_starts(tmp_path: Path, fake_airflow) -> None:
    jobs_file = tmp_path / "jobs.yaml"
    jobs_file.write_text("""
jobs:
  - name: odd
    schedule: {every: 11m}
    start_date: 2026-01-01T00:00:00Z
    catchup: true
    tasks: [{name: q, type: sql, sql: "SELECT 1"}]
""")
    jobs = load_jobs(jobs_file)
    (path,) = export_dags(jobs, tmp_path / "dags", jobs_file)
    module = _load(path)
    (dag,) = fake_airflow.RECORDED["dags"]
    assert dag.kwargs["schedule"].delta == timedelta(minutes=11)
    # Airflow counts `every` intervals from start_date, Sluice from the epoch: they agree
    # once the start date is Sluice's first interval start.
    job = jobs.job("odd")
    first, second = due_intervals(job, datetime(2026, 1, 1, 0, 30, tzinfo=UTC), None)[:2]
    assert module.START_DATE == first[0] != datetime(2026, 1, 1, tzinfo=UTC)
    assert second[0] == module.START_DATE + dag.kwargs["schedule"].delta


def test_empty_interval_becomes_the_jobs_latest_interval(tmp_path: Path, monkeypatch) -> None:
    """A zero-length interval (Airflow's trigger timetables) runs Sluice's interval then."""
    out = tmp_path / "ran.txt"
    jobs_file = tmp_path / "jobs.yaml"
    jobs_file.write_text(f"""
jobs:
  - name: j
    schedule: {{cron: "0 2 * * *", timezone: Europe/Paris}}
    allow_shell: true
    tasks:
      - name: t
        type: shell
        command: >-
          echo {{{{ ds }}}} {{{{ data_interval_start }}}} {{{{ data_interval_end }}}} > {out}
""")
    monkeypatch.setenv("SLUICE_HOME", str(tmp_path / "home"))
    fired = datetime(2026, 3, 4, 1, 0, 5, tzinfo=UTC)  # 02:00:05 in Paris
    done = subprocess.run(
        sluice.airflow.task_command("j", "t", str(jobs_file), fired, fired),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert out.read_text().split() == [
        "2026-03-03",
        "2026-03-03T01:00:00+00:00",
        "2026-03-04T01:00:00+00:00",
    ]


def test_operator_without_airflow_names_the_extra() -> None:
    sluice.airflow._cache.clear()
    with pytest.raises(MissingDependencyError, match=r"sluice\[airflow\]"):
        sluice.airflow.SluiceOperator  # noqa: B018
