"""A real Apache Airflow loads and runs the DAGs that ``sluice airflow export`` writes, and
its api-server takes the DAG runs that Sluice's ``airflow`` action triggers.

Airflow lives in its own virtual environment (``scripts/airflow_venv.sh``, cached in
``$SLUICE_AIRFLOW_VENV`` or ``~/.cache/sluice/airflow-venv``) with Sluice installed
editable, so the DAG files import ``sluice.airflow`` and ``SluiceOperator`` runs
``sluice jobs run-task`` exactly as on a deployment. Under ``CI=true`` a venv that cannot be
built fails the test; elsewhere the test is skipped (e.g. PyPI is unreachable). The venv and
the migrated Airflow home are built once per run (module fixtures); the api-server starts
once, for the action tests at the end.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sluice.actions.base import ActionContext, Delivery, create_action
from sluice.core.errors import PermanentActionError
from sluice.core.settings import Settings
from sluice.orchestration.airflow_export import export_dags
from sluice.orchestration.scheduler import latest_interval
from sluice.orchestration.spec import load_jobs
from sluice.sinks.base import SinkContext
from sluice.sinks.lake import write_lake_table
from sluice.storage.db import dispose_all
from tests.conftest import require_service

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

REPO = Path(__file__).resolve().parents[2]
VENV_SCRIPT = REPO / "scripts" / "airflow_venv.sh"
DAY = "2026-01-02"
FIRED = f"{DAY}T02:00:00+00:00"  # a fire time of daily-load (03:00 in Paris)
ROWS = 50
USER, PASSWORD = "sluice", "airflow-test-pw"

JOBS = """
jobs:
  - name: daily-load
    schedule: {{cron: "0 3 * * *", timezone: Europe/Paris}}
    start_date: 2026-01-01T00:00:00Z
    allow_shell: true
    retries: 2
    retry_delay: 1s
    timeout: 5m
    tasks:
      - {{name: check, type: quality_check, table: events, min_rows: 40, not_null: [id, ts]}}
      - {{name: to_parquet, type: export, table: events, path: "{out}/{{{{ ds }}}}.parquet",
          depends_on: [check]}}
      - {{name: count, type: sql, sql: "SELECT count(*) AS n FROM events",
          depends_on: [to_parquet], retries: 0}}
      - name: interval
        type: shell
        command: >-
          echo {{{{ ds }}}} {{{{ data_interval_start }}}} {{{{ data_interval_end }}}}
          > {out}/interval.txt
        depends_on: [count]
  - name: strict-check
    schedule: {{every: 1h}}
    tasks:
      - {{name: too_many, type: quality_check, table: events, min_rows: 1000}}
"""

# Runs inside the Airflow venv: what Airflow itself made of the DAG files.
PROBE = """
import json, sys
try:
    from airflow.dag_processing.dagbag import DagBag
except ImportError:  # Airflow 3.0
    from airflow.models.dagbag import DagBag

bag = DagBag(dag_folder=sys.argv[1])
out = {"import_errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": {}}
for dag_id, dag in bag.dags.items():
    table = dag.timetable  # SDK timetables have expression/delta; core ones _expression/_delta
    every = getattr(table, "delta", None) or getattr(table, "_delta", None)
    out["dags"][dag_id] = {
        "timetable": type(table).__name__,
        "schedule": getattr(table, "expression", None) or getattr(table, "_expression", None)
        or every.total_seconds(),
        "timezone": str(dag.timezone),
        "catchup": dag.catchup,
        "tasks": {
            t.task_id: {
                "operator": type(t).__name__,
                "retries": t.retries,
                "retry_delay": t.retry_delay.total_seconds(),
                "backoff": bool(t.retry_exponential_backoff),
                "timeout": t.execution_timeout and t.execution_timeout.total_seconds(),
                "upstream": sorted(t.upstream_task_ids),
            }
            for t in dag.tasks
        },
    }
with open(sys.argv[2], "w") as f:
    json.dump(out, f)
"""


@dataclass
class RealAirflow:
    """An Airflow home with the exported DAGs, driven through the ``airflow`` CLI."""

    venv: Path
    env: dict[str, str]
    dags: Path
    out: Path
    tmp: Path

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run ``airflow ARGS`` in the Airflow venv (never raises on a non-zero status)."""
        return subprocess.run(
            [str(self.venv / "bin" / "airflow"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def json(self, *args: str) -> Any:
        """The parsed ``-o json`` output of ``airflow ARGS``."""
        done = self.run(*args, "-o", "json")
        assert done.returncode == 0, done.stdout + done.stderr
        # Airflow prints warnings on stdout before the document; the document is one line.
        lines = [line for line in done.stdout.splitlines() if line.startswith(("[", "{"))]
        assert lines, done.stdout + done.stderr
        return json.loads(lines[-1])

    def task_states(self, dag_id: str, logical_date: str = DAY) -> dict[str, str]:
        """Task id → state of the only run of ``dag_id``, checked to be for ``logical_date``."""
        (run,) = self.json("dags", "list-runs", dag_id)
        assert run["logical_date"].startswith(logical_date[:19])
        states = self.json("tasks", "states-for-dag-run", dag_id, run["run_id"])
        return {row["task_id"]: row["state"] for row in states} | {"<run>": run["state"]}


def _build_venv() -> Path:
    """The cached Airflow venv, built or refreshed by ``scripts/airflow_venv.sh``."""
    venv = Path(os.environ.get("SLUICE_AIRFLOW_VENV", Path.home() / ".cache/sluice/airflow-venv"))
    try:
        done = subprocess.run(
            ["bash", str(VENV_SCRIPT), str(venv)],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        problem = "\n".join((done.stdout + done.stderr).strip().splitlines()[-5:])
        built = done.returncode == 0
    except subprocess.TimeoutExpired:
        problem, built = "timed out after 900 s", False
    require_service(built, f"an Apache Airflow venv (scripts/airflow_venv.sh: {problem})")
    return venv


def _airflow_env(venv: Path, root: Path, sluice_home: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}
        and not key.startswith(("AIRFLOW", "SLUICE_"))
    }
    env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        AIRFLOW_HOME=str(root / "airflow"),
        AIRFLOW__CORE__DAGS_FOLDER=str(root / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        # the api-server's simple auth manager: one admin whose password we know
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=f"{USER}:admin",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(root / "passwords.json"),
        AIRFLOW__API_AUTH__JWT_SECRET="sluice-test-jwt-secret-0123456789abcdef",
        SLUICE_HOME=str(sluice_home),
    )
    (root / "passwords.json").write_text(json.dumps({USER: PASSWORD}), encoding="utf-8")
    return env


def _create_events(settings: Settings) -> None:
    """The lake table ``events`` (ROWS rows), written through Sluice's lake sink."""
    ids = pa.array(range(ROWS), pa.int64())
    ts = pa.array([1_767_225_600_000_000 + i * 60_000_000 for i in range(ROWS)])
    table = pa.table({"id": ids, "ts": ts.cast(pa.timestamp("us", "UTC"))})
    try:
        write_lake_table(SinkContext("airflow-test", settings), "events", table, epoch=1)
    finally:
        dispose_all()


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> RealAirflow:
    """Airflow with a migrated metadata DB and the exported DAGs of ``JOBS``."""
    venv = _build_venv()
    root = tmp_path_factory.mktemp("airflow")
    sluice_home = root / "sluice-home"
    _create_events(Settings(home=sluice_home))
    jobs_file = root / "jobs.yaml"
    jobs_file.write_text(JOBS.format(out=root / "out"), encoding="utf-8")
    export_dags(load_jobs(jobs_file), root / "dags", jobs_file)
    real = RealAirflow(
        venv, _airflow_env(venv, root, sluice_home), root / "dags", root / "out", root
    )
    done = real.run("db", "migrate")
    assert done.returncode == 0, done.stdout + done.stderr
    return real


def test_airflow_parses_the_exported_dags_without_import_errors(airflow: RealAirflow) -> None:
    assert airflow.json("dags", "list-import-errors", "--local") == []
    listed = {dag["dag_id"] for dag in airflow.json("dags", "list", "--local")}
    assert listed == {"sluice_daily_load", "sluice_strict_check"}
    # What a scheduler does: serialize into the metadata DB; errors there too would show.
    done = airflow.run("dags", "reserialize")
    assert done.returncode == 0, done.stdout + done.stderr
    assert airflow.json("dags", "list-import-errors") == []
    assert {dag["dag_id"] for dag in airflow.json("dags", "list")} == listed


def test_schedule_retries_and_dependencies_map_one_to_one(airflow: RealAirflow) -> None:
    probe, result = airflow.tmp / "probe.py", airflow.tmp / "probe.json"
    probe.write_text(PROBE, encoding="utf-8")
    python = str(airflow.venv / "bin" / "python")
    done = subprocess.run(
        [python, str(probe), str(airflow.dags), str(result)],
        env=airflow.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    found = json.loads(result.read_text())
    assert found["import_errors"] == {}
    daily = found["dags"]["sluice_daily_load"]
    assert (daily["timetable"], daily["schedule"], daily["timezone"], daily["catchup"]) == (
        "CronDataIntervalTimetable",
        "0 3 * * *",
        "Europe/Paris",
        False,
    )
    tasks = daily["tasks"]
    assert {t["operator"] for t in tasks.values()} == {"SluiceOperator"}
    assert tasks["check"] == {
        "operator": "SluiceOperator",
        "retries": 2,
        "retry_delay": 1.0,
        "backoff": True,
        "timeout": 300.0,
        "upstream": [],
    }
    assert tasks["to_parquet"]["upstream"] == ["check"]
    assert (tasks["count"]["upstream"], tasks["count"]["retries"]) == (["to_parquet"], 0)
    strict = found["dags"]["sluice_strict_check"]
    assert (strict["timetable"], strict["schedule"]) == ("DeltaDataIntervalTimetable", 3600.0)
    assert strict["tasks"]["too_many"]["retries"] == 0


def test_dags_test_runs_the_sluice_tasks(airflow: RealAirflow) -> None:
    done = airflow.run("dags", "test", "sluice_daily_load", FIRED)
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-5000:]
    assert airflow.task_states("sluice_daily_load", FIRED) == {
        "check": "success",
        "to_parquet": "success",
        "count": "success",
        "interval": "success",
        "<run>": "success",
    }
    # The tasks got the interval Sluice's own scheduler would run at that moment: the day
    # that ended at the 03:00 (Paris) fire time, not a zero-length interval at it.
    spec = load_jobs(airflow.tmp / "jobs.yaml").job("daily-load").schedule_spec
    assert spec is not None
    start, end = latest_interval(spec, datetime.fromisoformat(FIRED))
    assert (start.isoformat(), end.isoformat()) == (
        "2026-01-01T02:00:00+00:00",
        "2026-01-02T02:00:00+00:00",
    )
    ds = start.date().isoformat()
    interval = (airflow.out / "interval.txt").read_text().split()
    assert interval == [ds, start.isoformat(), end.isoformat()]
    # The export task really ran, for the run's data interval ({{ ds }}).
    assert sorted(p.name for p in airflow.out.iterdir()) == [f"{ds}.parquet", "interval.txt"]
    assert pq.read_table(airflow.out / f"{ds}.parquet").num_rows == ROWS
    assert f"rows: {ROWS}" in done.stdout + done.stderr  # the quality check's own log line


def test_failed_quality_check_fails_the_dag_run(airflow: RealAirflow) -> None:
    done = airflow.run("dags", "test", "sluice_strict_check", DAY)
    assert done.returncode != 0
    assert f"events has {ROWS} rows, expected at least 1000" in done.stdout + done.stderr
    assert airflow.task_states("sluice_strict_check") == {"too_many": "failed", "<run>": "failed"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def api_server(airflow: RealAirflow) -> Iterator[str]:
    """Base URL of ``airflow api-server`` on the migrated home (DAGs serialized first)."""
    done = airflow.run("dags", "reserialize")
    assert done.returncode == 0, done.stdout + done.stderr
    port = _free_port()
    log = (airflow.tmp / "api-server.log").open("wb")
    process = subprocess.Popen(
        [str(airflow.venv / "bin" / "airflow"), "api-server", "-H", "127.0.0.1", "-p", str(port)],
        env=airflow.env | {"AIRFLOW__API__WORKERS": "1"},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, (airflow.tmp / "api-server.log").read_text()[-3000:]
            try:
                if httpx.get(f"{url}/api/v2/monitor/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "airflow api-server did not start in 180 s"
            time.sleep(1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _delivery(key: str, payload: object) -> Delivery:
    message = {"payload": payload}
    return Delivery(1, "p", "retrain", 1, "k", "critical", key, message)


def _action(url: str, **options: object) -> object:
    return create_action(
        "airflow",
        "retrain",
        {"base_url": url, "dag_id": "sluice_daily_load", **options},
        ActionContext("p"),
    )


def test_airflow_action_triggers_a_dag_run_on_the_real_api_server(
    airflow: RealAirflow, api_server: str
) -> None:
    action = _action(api_server, username=USER, password=PASSWORD)
    try:
        action.deliver(_delivery("anomaly-42", {"device": "d7", "score": 9.5}))  # type: ignore[attr-defined]
        # The same delivery again (a retry after a lost answer): Airflow says 409, delivered.
        action.deliver(_delivery("anomaly-42", {"device": "d7", "score": 9.5}))  # type: ignore[attr-defined]
    finally:
        action.close()  # type: ignore[attr-defined]
    runs = {run["run_id"]: run for run in airflow.json("dags", "list-runs", "sluice_daily_load")}
    assert "sluice-anomaly-42" in runs
    token = httpx.post(
        f"{api_server}/auth/token", json={"username": USER, "password": PASSWORD}, timeout=10
    ).json()["access_token"]
    got = httpx.get(
        f"{api_server}/api/v2/dags/sluice_daily_load/dagRuns/sluice-anomaly-42",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert got.status_code == 200, got.text
    assert got.json()["conf"] == {"device": "d7", "score": 9.5}


def test_airflow_action_with_wrong_credentials_is_permanent(api_server: str) -> None:
    action = _action(api_server, username=USER, password="wrong")
    try:
        with pytest.raises(PermanentActionError, match="no access token") as failed:
            action.deliver(_delivery("anomaly-43", {}))  # type: ignore[attr-defined]
    finally:
        action.close()  # type: ignore[attr-defined]
    assert "wrong" not in str(failed.value)
