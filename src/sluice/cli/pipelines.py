"""Pipeline commands: run, validate, query, dlq, demo."""

import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sluice.cli.common import (
    FormatOpt,
    check_format,
    console,
    err_console,
    fail,
    settings,
    starting,
)
from sluice.core.errors import SluiceError

if TYPE_CHECKING:
    from sluice.config.models import Pipeline
    from sluice.runners.stats import RunStats

app = typer.Typer()
dlq_app = typer.Typer(no_args_is_help=True, help="Inspect and replay the dead-letter store.")


@app.command()
def validate(pipeline: Annotated[Path, typer.Argument(help="pipeline YAML file")]) -> None:
    """Check a pipeline file; errors name the file, line and key."""
    from sluice.runners.check import check_pipeline

    try:
        p = check_pipeline(pipeline)
    except SluiceError as exc:
        fail(exc)
    console.print(
        f"[green]ok[/] {pipeline}: pipeline [bold]{p.name}[/] "
        f"({p.source.type} → {len(p.transforms)} transform(s), {len(p.models)} model(s),"
        f" {len(p.actions)} action(s), {len(p.sinks)} sink(s))"
    )


@app.command()
def run(
    pipeline: Annotated[Path, typer.Argument(help="pipeline YAML file")],
    until_idle: Annotated[
        bool,
        typer.Option(
            "--until-idle", help="stop once the source has nothing more (files read, topic drained)"
        ),
    ] = False,
    runner: Annotated[
        str, typer.Option(help="local, spark (bounded inputs) or beam (bounded inputs)")
    ] = "local",
    master: Annotated[
        str | None, typer.Option(help="Spark master URL (default local[*]; SPARK_REMOTE wins)")
    ] = None,
    beam_option: Annotated[
        list[str] | None,
        typer.Option(help="a Beam pipeline option, e.g. runner=FlinkRunner (repeatable)"),
    ] = None,
    model_partitions: Annotated[
        int,
        typer.Option(
            help="spark/beam: groups of keys an online model scores apart (1 = as --runner local)"
        ),
    ] = 1,
    group: Annotated[str | None, typer.Option(help="Kafka consumer group of this replica")] = None,
    idle_timeout: Annotated[
        float, typer.Option(help="seconds without records that count as idle (Kafka)")
    ] = 10.0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
) -> None:
    """Run a pipeline."""
    with starting():
        from sluice.config.loader import load_pipeline
        from sluice.runners.progress import ProgressReporter, print_summary
        from sluice.service.run import build_runner

    if runner not in ("local", "spark", "beam"):
        fail(SluiceError(f"unknown runner {runner!r}; use local, spark or beam"))
    try:
        with starting():
            p = load_pipeline(pipeline)
        if runner != "local":
            stats = _run_batch(
                pipeline,
                p,
                runner,
                master=master,
                beam_options=beam_option or [],
                model_partitions=model_partitions,
            )
            print_summary(console, stats)
            return
        stop = threading.Event()
        _install_stop_handlers(stop)
        with ProgressReporter(console, p.name, enabled=not quiet) as progress:
            with starting():
                local = build_runner(
                    p,
                    settings(),
                    until_idle=until_idle,
                    group=group,
                    idle_timeout=idle_timeout,
                    on_progress=progress.update,
                    stop_event=stop,
                )
            stats = local.run()
    except SluiceError as exc:
        fail(exc)
    print_summary(console, stats)


def _run_batch(path: Path, pipeline: "Pipeline", kind: str, **options: Any) -> "RunStats":
    """Run ``pipeline`` on Spark or Beam; configuration errors name the file and line."""
    from sluice.core.errors import ConfigError
    from sluice.runners.check import located
    from sluice.service.run import build_batch_runner

    try:
        batch = build_batch_runner(kind, pipeline, settings(), **options)
    except ConfigError as exc:
        raise located(exc, pipeline, path) from None
    try:
        return batch.run()
    except ConfigError as exc:
        raise located(exc, pipeline, path) from None


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

    check_format(fmt)
    try:
        table = QueryEngine(settings()).query(sql, limit=limit)
    except SluiceError as exc:
        fail(exc)
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

    check_format(fmt)
    try:
        table = read_dead_letters(settings(), pipeline=pipeline, limit=limit)
    except SluiceError as exc:
        fail(exc)
    print_table(console, table, fmt)


@dlq_app.command("replay")
def dlq_replay(
    stream: Annotated[str, typer.Argument(help="embedded-log stream the dead letters came from")],
    pipeline: Annotated[str | None, typer.Option(help="only this pipeline's dead letters")] = None,
) -> None:
    """Append dead letters that came from a log stream back to it (each at most once)."""
    from sluice.api.routes.ops import replay_from_lake
    from sluice.storage.log import check_stream_name, open_log
    from sluice.storage.query import QueryEngine

    config = settings()
    try:
        check_stream_name(stream)
        log = open_log(config.log_dir)
        if not log.exists(stream):
            known = ", ".join(sorted(log.streams())) or "none"
            raise SluiceError(f"stream {stream!r} does not exist (streams: {known})")
        out = replay_from_lake(QueryEngine(config), log, stream, pipeline)
    except (SluiceError, ValueError) as exc:
        fail(exc)
    console.print(
        f"replayed {out['replayed']:,} of {out['found']:,} dead letter(s) to {stream}"
        + (f" (offsets {out['first_offset']}..{out['last_offset']})" if out["replayed"] else "")
    )


@app.command()
def demo(
    serve: Annotated[
        bool, typer.Option("--serve/--no-serve", help="serve the API and dashboard afterwards")
    ] = True,
    events: Annotated[int, typer.Option(help="telemetry events to generate")] = 200_000,
    port: Annotated[int, typer.Option(help="API port")] = 5000,
) -> None:
    """Generate sample data, run the demo pipelines end to end, print a summary."""
    from sluice.demo import run_demo

    try:
        run_demo(console, settings(), events=events, serve=serve, port=port)
    except SluiceError as exc:
        fail(exc)
