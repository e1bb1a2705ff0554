"""The ``sluice`` command line (thin: parse, call the layers, print)."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from sluice.core.errors import SluiceError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Sluice: ingest, validate, score, act on and land event streams.")
dlq_app = typer.Typer(no_args_is_help=True, help="Inspect and replay the dead-letter store.")
app.add_typer(dlq_app, name="dlq")
console = Console()
err_console = Console(stderr=True)

FormatOpt = Annotated[str, typer.Option("--format", "-f", help="table, json or csv")]


def _fail(exc: BaseException) -> None:
    err_console.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(code=2 if isinstance(exc, SluiceError) else 1)


def _settings() -> Any:
    from sluice.core.settings import Settings

    return Settings()


@app.command()
def validate(pipeline: Annotated[Path, typer.Argument(help="pipeline YAML file")]) -> None:
    """Check a pipeline file; errors name the file, line and key."""
    from sluice.runners.check import check_pipeline

    try:
        p = check_pipeline(pipeline)
    except SluiceError as exc:
        _fail(exc)
    console.print(f"[green]ok[/] {pipeline}: pipeline [bold]{p.name}[/] "
                  f"({p.source.type} → {len(p.transforms)} transform(s), {len(p.models)} model(s),"
                  f" {len(p.actions)} action(s), {len(p.sinks)} sink(s))")


@app.command()
def run(
    pipeline: Annotated[Path, typer.Argument(help="pipeline YAML file")],
    until_idle: Annotated[bool, typer.Option("--until-idle", help="stop once the source has "
                                             "nothing more (files read, topic drained)")] = False,
    runner: Annotated[str, typer.Option(help="local or spark")] = "local",
    group: Annotated[str | None, typer.Option(help="Kafka consumer group of this replica")] = None,
    idle_timeout: Annotated[float, typer.Option(help="seconds without records that count as "
                                                "idle (Kafka)")] = 10.0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
) -> None:
    """Run a pipeline."""
    from sluice.config.loader import load_pipeline
    from sluice.runners.local import LocalRunner
    from sluice.runners.progress import ProgressReporter, print_summary

    if runner != "local":
        _fail(SluiceError(f"runner {runner!r} is not available in this build; use --runner local"))
    try:
        p = load_pipeline(pipeline)
        stop = threading.Event()
        _install_stop_handlers(stop)
        with ProgressReporter(console, p.name, enabled=not quiet) as progress:
            stats = LocalRunner(p, _settings(), until_idle=until_idle, group=group,
                                idle_timeout=idle_timeout, on_progress=progress.update,
                                stop_event=stop).run()
    except SluiceError as exc:
        _fail(exc)
    print_summary(console, stats)


def _install_stop_handlers(stop: threading.Event) -> None:
    def handler(signum: int, _frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        err_console.print("[yellow]stopping after the current epoch...[/]")
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


@app.command()
def query(
    sql: Annotated[str, typer.Argument(help="read-only SQL over warehouse and lake tables")],
    fmt: FormatOpt = "table",
    limit: Annotated[int | None, typer.Option(help="at most this many rows")] = None,
) -> None:
    """Run read-only SQL over the warehouse and the lake tables."""
    from sluice.runners.output import print_table
    from sluice.storage.query import QueryEngine

    try:
        table = QueryEngine(_settings()).query(sql, limit=limit)
    except SluiceError as exc:
        _fail(exc)
    print_table(console, table, fmt)


@dlq_app.command("list")
def dlq_list(
    pipeline: Annotated[str | None, typer.Option(help="only this pipeline")] = None,
    limit: Annotated[int, typer.Option(help="at most this many records")] = 50,
    fmt: FormatOpt = "table",
) -> None:
    """List dead-letter records with their reasons."""
    from sluice.runners.output import print_table
    from sluice.sinks.dead_letter import read_dead_letters

    try:
        table = read_dead_letters(_settings(), pipeline=pipeline, limit=limit)
    except SluiceError as exc:
        _fail(exc)
    print_table(console, table, fmt)


@app.command()
def demo(
    serve: Annotated[bool, typer.Option("--serve/--no-serve", help="serve the API and dashboard"
                                        " afterwards")] = True,
    events: Annotated[int, typer.Option(help="telemetry events to generate")] = 200_000,
    port: Annotated[int, typer.Option(help="API port")] = 5000,
) -> None:
    """Generate sample data, run the demo pipelines end to end, print a summary."""
    from sluice.demo import run_demo

    try:
        run_demo(console, _settings(), events=events, serve=serve, port=port)
    except SluiceError as exc:
        _fail(exc)


def main() -> None:
    """Entry point of the ``sluice`` console script."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()

