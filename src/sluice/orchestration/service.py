"""What the CLI, API and Airflow call: list jobs with runs, trigger, run now, backfill, one task."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sluice.core.errors import ConfigError
from sluice.core.settings import Settings
from sluice.orchestration.executor import run_with_timeout
from sluice.orchestration.history import RunStore
from sluice.orchestration.scheduler import (
    Scheduler,
    backfill_intervals,
    latest_interval,
    utc_now,
)
from sluice.orchestration.spec import JobsFile, load_jobs
from sluice.orchestration.tasks import TaskContext, execute_task, template_variables
from sluice.storage.db import get_engine


def default_jobs_file(settings: Settings) -> Path | None:
    """``SLUICE_JOBS_FILE``, else ``jobs.yaml`` in the working directory or ``SLUICE_HOME``."""
    env = os.environ.get("SLUICE_JOBS_FILE")
    if env:
        return Path(env)
    for candidate in (Path("jobs.yaml"), settings.home / "jobs.yaml"):
        if candidate.is_file():
            return candidate
    return None


def resolve_jobs(settings: Settings, jobs_file: str | Path | None = None) -> JobsFile:
    """Load the given jobs file, else the default one, else an empty jobs list."""
    path = Path(jobs_file) if jobs_file else default_jobs_file(settings)
    return load_jobs(path) if path else JobsFile()


def store_for(settings: Settings) -> RunStore:
    """The run store of ``settings``' metadata DB."""
    return RunStore(get_engine(str(settings.ensure().metadata_url)))


def _json_run(run: dict[str, Any]) -> dict[str, Any]:
    out = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in run.items()}
    out["tasks"] = [
        {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in t.items()}
        for t in run.get("tasks", [])
    ]
    return out


def describe_jobs(
    settings: Settings, jobs: JobsFile, runs_per_job: int = 10
) -> list[dict[str, Any]]:
    """Every job with its schedule, tasks, recent runs and each task's latest state per run."""
    store = store_for(settings)
    out = []
    for job in jobs.jobs:
        spec = job.schedule_spec
        runs = [_json_run(r) for r in store.recent(job.name, runs_per_job)]
        for run in runs:
            latest: dict[str, str] = {}
            for attempt in run["tasks"]:
                latest[attempt["task"]] = attempt["state"]
            run["task_states"] = latest
        out.append(
            {
                "name": job.name,
                "description": job.description,
                "schedule": (spec.cron or f"every {spec.every}") if spec else None,
                "timezone": spec.timezone if spec else None,
                "catchup": job.catchup,
                "tasks": [
                    {"name": t.name, "type": t.type, "depends_on": t.depends_on} for t in job.tasks
                ],
                "runs": runs,
            }
        )
    return out


def jobs_provider(
    settings: Settings, jobs_file: str | Path | None = None
) -> Callable[[], list[dict[str, Any]]]:
    """A callable for ``GET /api/v1/jobs`` (the jobs file is re-read on every call)."""
    return lambda: describe_jobs(settings, resolve_jobs(settings, jobs_file))


def trigger(
    settings: Settings,
    job_name: str,
    params: dict[str, Any] | None = None,
    *,
    jobs_file: str | Path | None = None,
    now: datetime | None = None,
    extra: dict[str, Any] | None = None,
) -> int:
    """Queue a manual run of ``job_name`` (a running scheduler executes it); return its id.

    ``params`` must be declared by the job (ConfigError otherwise); ``extra`` is stored
    beside them unchecked (what Sluice itself adds, such as an action's idempotency key).
    """
    job = resolve_jobs(settings, jobs_file).job(job_name)
    checked = {**job.check_params(params), **(extra or {})}
    moment = now or utc_now()
    run_id = store_for(settings).create(
        job.name, moment, moment, moment, kind="manual", params=checked
    )
    if run_id is None:
        raise ConfigError(f"job {job_name!r} was already triggered at {moment.isoformat()}")
    return run_id


def run_now(
    settings: Settings, jobs: JobsFile, job_name: str, params: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Run ``job_name`` now in this process and return the finished run."""
    params = jobs.job(job_name).check_params(params)
    run_id = _trigger_in(settings, jobs, job_name, params)
    return _execute_runs(settings, jobs, [run_id])[0]


def _trigger_in(
    settings: Settings, jobs: JobsFile, job_name: str, params: dict[str, Any] | None
) -> int:
    moment = utc_now()
    run_id = store_for(settings).create(
        job_name, moment, moment, moment, kind="manual", params=params
    )
    assert run_id is not None
    return run_id


def backfill(
    settings: Settings,
    jobs: JobsFile,
    job_name: str,
    start: datetime,
    end: datetime,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every interval of ``job_name`` starting in [start, end) that has no run yet.

    ``progress`` gets (runs done, runs to do) before the first run and after each one.
    """
    job = jobs.job(job_name)
    store = store_for(settings)
    now = utc_now()
    ids = [
        rid
        for s, e in backfill_intervals(job, start, end)
        if (rid := store.create(job.name, s, e, now)) is not None
    ]
    return _execute_runs(settings, jobs, ids, progress)


def _execute_runs(
    settings: Settings,
    jobs: JobsFile,
    ids: list[int],
    progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    scheduler = Scheduler(settings, jobs, max_workers=1, job_runner=job_runner(settings))
    store = scheduler.store
    try:
        for done, run_id in enumerate(ids):
            if progress is not None:
                progress(done, len(ids))
            run = store.get(run_id)
            if store.claim(run_id, scheduler.owner, utc_now(), utc_now() + scheduler.lease):
                scheduler.executor.execute(jobs.job(run["job"]), run)
        if progress is not None:
            progress(len(ids), len(ids))
    finally:
        scheduler.close()
    return [store.get(run_id) for run_id in ids]


def run_task(
    settings: Settings,
    jobs: JobsFile,
    job_name: str,
    task_name: str,
    *,
    start: datetime,
    end: datetime | None = None,
    params: dict[str, Any] | None = None,
) -> list[str]:
    """Run one task once, outside the run history (Airflow keeps its own); return its log.

    The data interval is [start, end), one day without ``end``. An empty one (``end <=
    start``: what Airflow's trigger timetables pass) becomes the job's latest complete
    schedule interval at ``end``, the interval Sluice's own scheduler would run then.
    """
    job = jobs.job(job_name)
    task = job.task(task_name)
    if end is not None and end <= start and job.schedule_spec is not None:
        start, end = latest_interval(job.schedule_spec, end)
    params = {**job.params, **job.check_params(params)}
    variables = template_variables(job.name, start, end or start + timedelta(days=1), params)
    ctx = TaskContext(
        settings,
        job.name,
        task.name,
        variables,
        timeout=job.task_timeout(task),
        job_runner=job_runner(settings),
    )
    run_with_timeout(lambda: execute_task(task.type, task.options, ctx), ctx.timeout)
    return ctx.lines


def start_scheduler(
    settings: Settings, jobs_file: str | Path | None = None, *, poll: float = 5.0
) -> tuple[Scheduler, threading.Event, threading.Thread] | None:
    """Start the embedded scheduler on a daemon thread (for ``sluice serve``); None if no jobs.

    Stop it with ``event.set(); thread.join()`` (running runs finish first).
    """
    jobs = resolve_jobs(settings, jobs_file)
    if not jobs.jobs:
        return None
    scheduler = Scheduler(settings, jobs, job_runner=job_runner(settings))
    stop = threading.Event()
    thread = threading.Thread(
        target=scheduler.run_forever, args=(stop, poll), daemon=True, name="sluice-scheduler"
    )
    thread.start()
    return scheduler, stop, thread


def job_runner(
    settings: Settings, jobs_file: str | Path | None = None
) -> Callable[[str, dict[str, Any], str], None]:
    """The ``run_job`` action's runner: queue a manual run for the scheduler to execute."""

    def run(job: str, params: dict[str, Any], idempotency_key: str) -> None:
        extra = {"idempotency_key": idempotency_key}
        trigger(settings, job, params, jobs_file=jobs_file, extra=extra)

    return run
