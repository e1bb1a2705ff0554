"""``SluiceOperator`` for Apache Airflow 3 DAG files: runs one task of a Sluice job.

``import sluice.airflow`` works without Airflow; the operator class is built on first
access (``from sluice.airflow import SluiceOperator``) on ``airflow.sdk.BaseOperator``, so
Sluice and Airflow 3.x share one environment (Airflow 2 pins SQLAlchemy < 2, which Sluice
cannot use). By default the task runs in a subprocess of that environment's Python
(``python -m sluice.cli jobs run-task JOB TASK --jobs FILE --start ... --end ...``, i.e.
``sluice jobs run-task``) so a crash cannot take the Airflow worker down;
``in_process=True`` calls the Python API. The data interval is the DAG run's.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

from sluice.core.errors import MissingDependencyError

_cache: dict[str, type] = {}


def _base_operator() -> type:
    try:
        from airflow.sdk import BaseOperator
    except ImportError:
        raise MissingDependencyError("apache-airflow>=3", "airflow", "SluiceOperator") from None
    return BaseOperator


def _interval(context: dict[str, Any]) -> tuple[datetime, datetime | None]:
    start = context.get("data_interval_start") or context.get("logical_date")
    end = context.get("data_interval_end")
    if start is None:
        start = datetime.now(UTC)
    return start, end


def task_command(
    job: str, task: str, jobs_file: str, start: datetime, end: datetime | None
) -> list[str]:
    """The ``sluice jobs run-task`` command line for one task and data interval."""
    # ``-m sluice.cli``, not ``-m sluice.cli.jobs``: the package imports ``jobs`` first, so
    # runpy would warn that the module is already in sys.modules.
    command = [sys.executable, "-m", "sluice.cli", "jobs", "run-task", job, task]
    command += ["--jobs", jobs_file, "--start", start.isoformat()]
    if end is not None:
        command += ["--end", end.isoformat()]
    return command


def _build() -> type:
    base: Any = _base_operator()

    class SluiceOperator(base):
        """Runs one task of a Sluice job for the DAG run's data interval."""

        ui_color = "#cfe8ff"

        def __init__(
            self, *, job: str, task: str, jobs_file: str, in_process: bool = False, **kwargs: Any
        ) -> None:
            super().__init__(**kwargs)
            self.sluice_job, self.sluice_task, self.jobs_file = job, task, jobs_file
            self.in_process = in_process

        def execute(self, context: Any) -> None:
            """Run the task; a failure raises so Airflow retries per the DAG's policy."""
            start, end = _interval(dict(context))
            if self.in_process:
                from sluice.core.settings import Settings
                from sluice.orchestration.service import run_task
                from sluice.orchestration.spec import load_jobs

                for line in run_task(
                    Settings(),
                    load_jobs(self.jobs_file),
                    self.sluice_job,
                    self.sluice_task,
                    start=start,
                    end=end,
                ):
                    self.log.info("%s", line)
                return
            command = task_command(self.sluice_job, self.sluice_task, self.jobs_file, start, end)
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            for line in (done.stdout + done.stderr).splitlines():
                self.log.info("%s", line)
            if done.returncode != 0:
                raise RuntimeError(
                    f"sluice task {self.sluice_job}.{self.sluice_task} failed "
                    f"(exit status {done.returncode})"
                )

    return SluiceOperator


def __getattr__(name: str) -> Any:
    if name == "SluiceOperator":
        if name not in _cache:
            _cache[name] = _build()
        return _cache[name]
    raise AttributeError(name)
