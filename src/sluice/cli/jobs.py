"""``sluice jobs``, ``sluice scheduler`` and ``sluice airflow export``."""

import json
import signal
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from sluice.cli.common import console, fail, settings
from sluice.core.errors import ConfigError, SluiceError

app = typer.Typer(no_args_is_help=True, help="Scheduled jobs: list, run, backfill, history.")
airflow_app = typer.Typer(no_args_is_help=True, help="Apache Airflow integration.")
scheduler_app = typer.Typer(help="The embedded scheduler alone (no API).")
JobsOpt = Annotated[
    Path | None,
    typer.Option(
        "--jobs",
        "-j",
        help="jobs file (default: $SLUICE_JOBS_FILE, ./jobs.yaml, $SLUICE_HOME/jobs.yaml)",
    ),
]


def _jobs(path: Path | None) -> Any:
    from sluice.orchestration.service import resolve_jobs

    jobs = resolve_jobs(settings(), path)
    if not jobs.jobs and path is None:
        raise ConfigError("no jobs file: pass --jobs FILE or set SLUICE_JOBS_FILE")
    return jobs


def _time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"invalid time {text!r}; write it like 2026-01-31 or 2026-01-31T02:00:00+00:00"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _print_run(run: dict[str, Any]) -> None:
    console.print(
        f"run {run['id']} of {run['job']}: [bold]{run['state']}[/] "
        f"({run['interval_start']} → {run['interval_end']})",
        highlight=False,
    )
    for attempt in run.get("tasks", []):
        error = f" — {attempt['error']}" if attempt.get("error") else ""
        console.print(
            f"  {attempt['task']} #{attempt['attempt']}: {attempt['state']}{error}",
            highlight=False,
            soft_wrap=True,
        )


@app.command("list")
def list_jobs(jobs_file: JobsOpt = None) -> None:
    """List jobs with their schedule, tasks and last run."""
    from sluice.orchestration.service import describe_jobs

    try:
        described = describe_jobs(settings(), _jobs(jobs_file), runs_per_job=1)
    except SluiceError as exc:
        fail(exc)
    view = Table("job", "schedule", "tasks", "last run", header_style="bold")
    for job in described:
        last = job["runs"][0] if job["runs"] else None
        view.add_row(
            job["name"],
            job["schedule"] or "manual",
            ", ".join(t["name"] for t in job["tasks"]),
            f"{last['state']} ({last['interval_start']})" if last else "-",
        )
    console.print(view)


@app.command("run")
def run_job(
    job: Annotated[str, typer.Argument(help="job name")],
    jobs_file: JobsOpt = None,
    params: Annotated[str | None, typer.Option(help="JSON object of params")] = None,
) -> None:
    """Run a job now, in this process, and print how each task went."""
    from sluice.orchestration.service import run_now

    try:
        run = run_now(settings(), _jobs(jobs_file), job, json.loads(params) if params else None)
    except (SluiceError, json.JSONDecodeError) as exc:
        fail(exc)
    _print_run(run)
    if run["state"] != "success":
        raise typer.Exit(1)


@app.command("runs")
def list_runs(
    job: Annotated[str | None, typer.Argument(help="only this job")] = None,
    limit: Annotated[int, typer.Option(help="how many runs")] = 20,
) -> None:
    """Recent runs with each task's latest state."""
    from sluice.orchestration.service import store_for

    try:
        runs = store_for(settings()).recent(job, limit)
    except SluiceError as exc:
        fail(exc)
    view = Table("id", "job", "interval start", "state", "attempts", "tasks", header_style="bold")
    for run in runs:
        latest = {a["task"]: a["state"] for a in run["tasks"]}
        view.add_row(
            str(run["id"]),
            run["job"],
            str(run["interval_start"]),
            run["state"],
            str(run["attempts"]),
            ", ".join(f"{k}={v}" for k, v in latest.items()),
        )
    console.print(view)


@app.command("logs")
def logs(run_id: Annotated[int, typer.Argument(help="run id (see `sluice jobs runs`)")]) -> None:
    """Every task attempt of a run with its log and error."""
    from sluice.orchestration.service import store_for

    try:
        run = store_for(settings()).get(run_id)
    except SluiceError as exc:
        fail(exc)
    _print_run(run)
    for attempt in run["tasks"]:
        if attempt.get("log"):
            console.rule(f"{attempt['task']} #{attempt['attempt']}")
            console.print(attempt["log"], markup=False, highlight=False)


@app.command("backfill")
def backfill_job(
    job: Annotated[str, typer.Argument(help="job name")],
    start: Annotated[str, typer.Option(help="first interval start (ISO time)")],
    end: Annotated[str, typer.Option(help="run intervals starting before this")],
    jobs_file: JobsOpt = None,
) -> None:
    """Run every schedule interval in [start, end) that has no run yet."""
    from sluice.orchestration.service import backfill
    from sluice.runners.progress import LineProgress

    def show(done: int, total: int) -> None:
        progress.set_total(total)
        progress.update(done)

    try:
        with LineProgress(console, f"backfill {job}", total=0, unit="runs") as progress:
            runs = backfill(settings(), _jobs(jobs_file), job, _time(start), _time(end), show)
    except SluiceError as exc:
        fail(exc)
    for run in runs:
        _print_run(run)
    if not runs:
        console.print("every interval in the range already has a run")
    if any(r["state"] != "success" for r in runs):
        raise typer.Exit(1)


@app.command("run-task")
def run_one_task(
    job: Annotated[str, typer.Argument(help="job name")],
    task: Annotated[str, typer.Argument(help="task name")],
    jobs_file: JobsOpt = None,
    ds: Annotated[str | None, typer.Option(help="data interval date")] = None,
    start: Annotated[str | None, typer.Option(help="data interval start")] = None,
    end: Annotated[str | None, typer.Option(help="data interval end")] = None,
) -> None:
    """Run one task once (what Airflow's SluiceOperator calls); no run history is kept."""
    from sluice.orchestration.service import run_task

    try:
        begin = _time(start or ds or datetime.now(UTC).date().isoformat())
        lines = run_task(
            settings(), _jobs(jobs_file), job, task, start=begin, end=_time(end) if end else None
        )
    except Exception as exc:
        fail(exc)
    for line in lines:
        console.print(line, markup=False, highlight=False)


@scheduler_app.callback(invoke_without_command=True)
def scheduler(
    jobs_file: JobsOpt = None,
    workers: Annotated[int, typer.Option(help="runs executed at once")] = 2,
    poll: Annotated[float, typer.Option(help="seconds between ticks")] = 5.0,
) -> None:
    """Run the embedded scheduler in the foreground until Ctrl-C / SIGTERM."""
    from sluice.orchestration.scheduler import Scheduler
    from sluice.orchestration.service import job_runner

    try:
        config = settings()
        sched = Scheduler(
            config, _jobs(jobs_file), max_workers=workers, job_runner=job_runner(config)
        )
    except SluiceError as exc:
        fail(exc)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    console.print(f"scheduler running {len(sched.jobs.jobs)} job(s); Ctrl-C to stop")
    try:
        sched.run_forever(stop, poll=poll)
    except KeyboardInterrupt:
        stop.set()
        sched.close()


@airflow_app.callback()
def airflow_group() -> None:
    """Apache Airflow integration: export jobs as DAGs using sluice.airflow.SluiceOperator."""


@airflow_app.command("export")
def export(
    out_dir: Annotated[Path, typer.Argument(help="folder for the DAG files")],
    jobs_file: JobsOpt = None,
) -> None:
    """Write one Airflow DAG file per job, using sluice.airflow.SluiceOperator."""
    from sluice.orchestration.airflow_export import export_dags
    from sluice.orchestration.service import default_jobs_file

    try:
        path = jobs_file or default_jobs_file(settings())
        written = export_dags(_jobs(path), out_dir, path or "jobs.yaml")
    except SluiceError as exc:
        fail(exc)
    for file in written:
        console.print(f"wrote {file}", highlight=False)


if __name__ == "__main__":  # ``python -m sluice.cli.jobs run-task ...`` (SluiceOperator)
    app()
