"""Service commands: serve, ingest, forget-consumer, predict."""

import json
from pathlib import Path
from typing import Annotated

import typer

from sluice.cli.common import console, err_console, fail, settings
from sluice.core.errors import SluiceError

app = typer.Typer()


@app.command()
def serve(
    pipelines: Annotated[list[Path] | None, typer.Argument(help="pipeline files to run")] = None,
    host: Annotated[
        str, typer.Option(help="bind address; beyond loopback API keys are required")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 5000,
    group: Annotated[str | None, typer.Option(help="Kafka consumer group")] = None,
) -> None:
    """Serve the API and dashboard, the scheduler and the given pipelines."""
    from sluice.service.serve import serve as run_service

    def ready(url: str) -> None:
        console.print(
            f"[green]serving[/] {url}  (dashboard {url}/, API docs {url}/docs); Ctrl-C to stop"
        )

    try:
        run_service(
            settings(), list(pipelines or []), host=host, port=port, group=group, on_ready=ready
        )
    except SluiceError as exc:
        fail(exc)


@app.command()
def ingest(
    stream: Annotated[str, typer.Argument(help="embedded log stream")],
    file: Annotated[str, typer.Argument(help="NDJSON or JSON-array file, or - for stdin")],
) -> None:
    """Append events to a stream of the embedded log (like POST /api/v1/ingest/STREAM)."""
    from sluice.runners.progress import LineProgress
    from sluice.storage.log import check_stream_name, ingest_file

    total = Path(file).stat().st_size if file != "-" and Path(file).is_file() else None
    try:
        check_stream_name(stream)
        with LineProgress(console, f"ingest {stream}", total=total, unit="bytes") as progress:
            count, first, last = ingest_file(
                settings(), stream, file, progress=lambda done: progress.update(done)
            )
    except (SluiceError, ValueError, OSError) as exc:
        fail(exc)
    console.print(f"appended {count:,} event(s) to {stream} (offsets {first}..{last})")


@app.command("forget-consumer")
def forget_consumer(
    stream: Annotated[str, typer.Argument(help="embedded log stream")],
    consumer: Annotated[str, typer.Argument(help="consumer name (the pipeline's name)")],
) -> None:
    """Release a gone pipeline's hold on a stream (retention and ingest backpressure)."""
    from sluice.storage.log import open_log

    log = open_log(settings().log_dir)
    try:
        if not log.exists(stream):
            fail(SluiceError(f"stream {stream!r} does not exist"))
        forgotten = log.forget_consumer(stream, consumer)
    except (SluiceError, ValueError) as exc:
        fail(exc)
    if not forgotten:
        known = ", ".join(sorted(log.consumers(stream))) or "none"
        fail(SluiceError(f"stream {stream!r} has no consumer {consumer!r} (consumers: {known})"))
    console.print(f"forgot consumer {consumer} of {stream}")


@app.command()
def predict(
    data: Annotated[str, typer.Argument(help="a string, or a JSON object / array of records")],
    model: Annotated[str | None, typer.Option(help="model name (default: by input kind)")] = None,
) -> None:
    """Score one input with a model (like POST /api/v1/predict)."""
    from sluice.models.predict import Predictor
    from sluice.runners.prepare import RecordPreparer

    try:
        parsed = json.loads(data) if data.lstrip()[:1] in ("{", "[") else data
    except json.JSONDecodeError as exc:
        err_console.print(f"[bold red]error:[/] invalid JSON: {exc}")
        raise typer.Exit(2) from None
    try:
        config = settings()
        result = Predictor(config, prepare=RecordPreparer(config)).predict(parsed, model=model)
    except SluiceError as exc:
        fail(exc)
    console.print_json(json.dumps(result, default=str))
