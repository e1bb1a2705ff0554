"""Run the demo: make data, run the pipelines, print what happened."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
from rich.console import Console
from rich.table import Table

from sluice.config.loader import load_pipeline
from sluice.core.settings import Settings
from sluice.demo import pipelines
from sluice.demo.receiver import OpsReceiver
from sluice.runners.progress import ProgressReporter, step
from sluice.runners.stats import RunStats
from sluice.service.run import build_runner

GARBAGE_LINES = [
    b'{"device_id": "dev-0001", "ts": "2026-01-01T00:00:00Z", "temperature": "hot"}',
    b'{"device_id": "dev-0002", "ts": "not a time", "temperature": 70.1}',
    b'{"ts": "2026-01-01T00:00:01Z", "temperature": 70.1}',
    b'{"device_id": "dev-0003", "ts": "2026-01-01T00:00:02Z", "temperature": 7',
    b"this is not json at all",
]


@dataclass
class DemoResult:
    """What the demo ran and measured."""

    telemetry: RunStats
    tickets: RunStats
    generated_events: int
    extra: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _write_data(data: Path, events: int, tickets: int) -> None:
    from sluice.sources import synthetic, synthetic_text

    data.mkdir(parents=True, exist_ok=True)
    path = data / "telemetry.jsonl"
    synthetic.write_jsonl(synthetic.telemetry(events, n_devices=50, seed=7), path)
    with path.open("ab") as handle:  # a few broken records, to show the dead-letter store
        handle.write(b"\n".join(GARBAGE_LINES) + b"\n")
    pacsv.write_csv(synthetic.devices(50, seed=7), data / "devices.csv")
    synthetic.write_jsonl(synthetic_text.tickets(tickets, seed=7), data / "tickets.jsonl")


def _pipeline_files(home: Path, data: Path, receiver: str) -> dict[str, Path]:
    folder = home / "demo"
    files = {
        "telemetry": pipelines.TELEMETRY.format(
            data=data,
            models=pipelines.TELEMETRY_MODELS,
            actions=pipelines.TELEMETRY_ACTIONS.format(receiver=receiver),
        ),
        "tickets": pipelines.TICKETS.format(
            data=data,
            models=pipelines.TICKET_MODELS,
            actions=pipelines.TICKET_ACTIONS.format(home=home),
        ),
    }
    out = {}
    for name, text in files.items():
        path = folder / f"{name}.yaml"
        path.write_text(text, encoding="utf-8")
        out[name] = path
    return out


def train_ticket_models(settings: Settings) -> dict[str, Any]:
    """Train the category and urgency text models on a separate ticket sample; promote them."""
    import tempfile

    import joblib

    from sluice.models.registry import ModelRegistry
    from sluice.models.text import train_text_classifier
    from sluice.sources import synthetic_text

    training = synthetic_text.tickets(4_000, seed=11)
    texts = training.column("text").to_pylist()
    registry = ModelRegistry(settings)
    out = {}
    for target in ("category", "urgency"):
        labels = [str(x) for x in training.column(target).to_pylist()]
        model, metrics = train_text_classifier(texts, labels, seed=0)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.joblib"
            joblib.dump(model, path)
            registry.register(
                f"ticket_{target}",
                "text_classifier",
                path,
                features=["text"],
                metrics=metrics,
                params={"classes": list(model.classes_)},
                stage="production",
            )
        out[f"ticket {target} model accuracy (held out)"] = f"{metrics['accuracy']:.1%}"
    return out


def _run(console: Console, settings: Settings, path: Path, total: int) -> RunStats:
    from sluice.storage.checkpoints import CheckpointStore
    from sluice.storage.db import get_engine

    pipeline = load_pipeline(path)
    CheckpointStore(get_engine(str(settings.metadata_url))).reset(pipeline.name)
    if not console.is_terminal:
        console.print(f"running pipeline {pipeline.name} ({total:,} events)...", highlight=False)
    with ProgressReporter(console, pipeline.name, total=total) as progress:
        return build_runner(pipeline, settings, until_idle=True, on_progress=progress.update).run()


def _earlier_state(settings: Settings) -> bool:
    """True when SLUICE_HOME already holds a metadata DB (models, job runs, actions)."""
    url = str(settings.metadata_url)
    return url.startswith("sqlite") and (settings.home / "metadata.db").exists()


def _reset_outputs(settings: Settings) -> None:
    import shutil

    for table in ("telemetry", "telemetry_1m", "tickets", "dead_letter"):
        shutil.rmtree(settings.lake_path(table), ignore_errors=True)
    Path(str(settings.warehouse_url)).unlink(missing_ok=True)
    (settings.home / "demo" / "urgent_tickets.jsonl").unlink(missing_ok=True)


def run_demo(
    console: Console,
    settings: Settings,
    *,
    events: int = 200_000,
    tickets: int = 2_000,
    serve: bool = True,
    port: int = 5000,
) -> DemoResult:
    """Generate data, run the demo pipelines, print the summary, optionally serve."""
    reused = _earlier_state(settings)
    settings.ensure()
    started = time.perf_counter()
    data = settings.home / "demo" / "data"
    console.print(f"[bold]Sluice demo[/] — state in {settings.home}")
    if reused:
        console.print(
            "[yellow]note:[/] this folder holds an earlier run: its data and tables are made "
            "anew, but the model registry, job runs and action history carry on. Remove the "
            "folder (or set SLUICE_HOME) for a fresh start.",
            highlight=False,
        )
    with step(console, f"generating sample data ({events:,} telemetry events)..."):
        _write_data(data, events, tickets)
    _reset_outputs(settings)
    with step(console, "training the ticket text models..."):
        text_metrics = train_ticket_models(settings)
    with OpsReceiver() as receiver:
        files = _pipeline_files(settings.home, data, receiver.url)
        telemetry = _run(console, settings, files["telemetry"], events + len(GARBAGE_LINES))
        ticket_stats = _run(console, settings, files["tickets"], tickets)
    result = DemoResult(telemetry, ticket_stats, events, extra=text_metrics)
    result.extra.update(_action_counts(settings, receiver))
    with step(console, "running the nightly job once (retrain, promote, compact, check)..."):
        result.extra.update(_run_nightly_job(settings))
    result.warnings += _weak_production_models(settings)
    _print_summary(console, settings, result, time.perf_counter() - started)
    if serve:
        from sluice.demo.serve import serve_demo

        serve_demo(console, settings, files, port=port)
    return result


def _action_counts(settings: Settings, receiver: OpsReceiver) -> dict[str, Any]:
    from sluice.actions.service import ActionsService

    rows = ActionsService(settings=settings).list(limit=100_000)
    fired = {
        name: sum(1 for r in rows if r.get("action") == name)
        for name in ("page-oncall", "route-urgent")
    }
    delivered = sum(1 for r in rows if r.get("status") == "delivered")
    return {
        "actions fired: on-call pages / urgent tickets routed": (
            f"{fired['page-oncall']:,} / {fired['route-urgent']:,}"
        ),
        "actions delivered (webhooks at the local on-call stub)": (
            f"{delivered:,} ({len(receiver.keys):,} webhooks)"
        ),
    }


def _run_nightly_job(settings: Settings) -> dict[str, Any]:
    """Write the demo's jobs file under SLUICE_HOME (the scheduler's default) and run it once."""
    from sluice.orchestration.service import resolve_jobs, run_now

    path = settings.home / "jobs.yaml"
    path.write_text(pipelines.JOBS, encoding="utf-8")
    run = run_now(settings, resolve_jobs(settings, path), "nightly")
    states = ", ".join(_task_outcome(t) for t in run.get("tasks", []))
    return {"nightly job (scheduled 02:00 UTC), run now": f"{run.get('state')}: {states}"}


def _task_outcome(task: dict[str, Any]) -> str:
    """``promote kept v1`` rather than ``promote success`` when the task kept the old model."""
    first = str(task.get("log") or "").splitlines()[:1]
    if task.get("state") == "success" and first and first[0].startswith(("kept", "promoted")):
        return f"{task['task']}: {first[0].split(':')[0].split(' (')[0]}"
    return f"{task['task']} {task['state']}"


WEAK_F1 = 0.5


def _weak_production_models(settings: Settings) -> list[str]:
    """A warning for each production model whose recorded f1 is below ``WEAK_F1``."""
    from sluice.models.registry import ModelRegistry

    out = []
    for version in ModelRegistry(settings).list():
        f1 = version.metrics.get("f1")
        if version.stage == "production" and isinstance(f1, int | float) and f1 < WEAK_F1:
            out.append(
                f"{version.name} v{version.version} is in production with f1 {f1:.3f} "
                f"(below {WEAK_F1}): it catches few of the labelled anomalies; "
                f"roll it back with `sluice models rollback {version.name}` or retrain it"
            )
    return out


def _count(settings: Settings, sql: str) -> Any:
    from sluice.storage.query import QueryEngine

    table: pa.Table = QueryEngine(settings).query(sql)
    return table.column(0)[0].as_py() if table.num_rows else None


def _quality(settings: Settings) -> dict[str, str]:
    """Anomaly precision/recall against the injected truth; ticket routing accuracy."""
    tp, fp, fn = (
        _count(settings, "select count(*) from telemetry where " + cond) or 0
        for cond in (
            "temp_anomaly_anomaly and is_anomaly",
            "temp_anomaly_anomaly and not is_anomaly",
            "not temp_anomaly_anomaly and is_anomaly",
        )
    )
    flagged = tp + fp
    precision = f"{tp / flagged:.1%}" if flagged and tp + fn else "n/a"
    recall = f"{tp / (tp + fn):.1%}" if tp + fn else "n/a"
    truth = "" if tp + fn else " (no anomalies were injected: try more --events)"
    routed = _count(settings, "select avg((ticket_category_label = category)::int) from tickets")
    urgency = _count(settings, "select avg((ticket_urgency_label = urgency)::int) from tickets")
    return {
        "anomalies flagged (temp_anomaly)": f"{flagged:,}",
        "anomaly precision / recall vs injected truth": f"{precision} / {recall}{truth}",
        "tickets routed to the right category / urgency": (
            f"{(routed or 0):.1%} / {(urgency or 0):.1%}"
        ),
    }


def _print_summary(
    console: Console, settings: Settings, result: DemoResult, seconds: float
) -> None:
    t = result.telemetry
    summary = Table(title="demo summary", show_header=False, title_justify="left")
    summary.add_row("telemetry events generated", f"{result.generated_events:,}")
    summary.add_row("telemetry events landed (lake + warehouse)", f"{t.events_out:,}")
    summary.add_row("dead-lettered (bad records)", f"{t.dead_lettered:,}")
    windows = _count(settings, "select count(*) from telemetry_1m")
    summary.add_row("1-minute windows (telemetry_1m)", f"{windows or 0:,}")
    summary.add_row("support tickets landed", f"{result.tickets.events_out:,}")
    for label, value in _quality(settings).items():
        summary.add_row(label, value)
    for key, value in result.extra.items():
        summary.add_row(key, str(value))
    summary.add_row("time", f"{seconds:.1f} s")
    console.print(summary)
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    console.print('Try: [bold]sluice query "select count(*) from telemetry"[/]', soft_wrap=True)
