"""Operations commands: produce (Kafka), actions, pipelines status, api keys."""

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from sluice.cli.common import FormatOpt, check_format, console, fail, settings
from sluice.core.errors import SluiceError

if TYPE_CHECKING:
    from sluice.storage.checkpoints import CheckpointStore

app = typer.Typer()
actions_app = typer.Typer(no_args_is_help=True, help="Action deliveries: audit, retry, approve.")
pipelines_app = typer.Typer(no_args_is_help=True, help="Pipelines: checkpoints, runs, lag.")
api_app = typer.Typer(no_args_is_help=True, help="API keys.")


@app.command()
def produce(
    topic: Annotated[str, typer.Argument(help="Kafka topic")],
    file: Annotated[str, typer.Argument(help="JSON lines / CSV file, or - for stdin")],
    bootstrap_servers: Annotated[
        str,
        typer.Option(
            "--bootstrap-servers",
            "--bootstrap-server",
            "--broker-list",
            "-b",
            envvar="KAFKA_BOOTSTRAP",
            help="brokers, host:port[,...] (--bootstrap-server and --broker-list are aliases)",
        ),
    ] = "localhost:9092",
    key: Annotated[str | None, typer.Option(help="field whose value keys each message")] = None,
    fmt: Annotated[str, typer.Option("--format", help="json or csv")] = "json",
) -> None:
    """Produce a file's records to a Kafka topic (like kafka-console-producer)."""
    from sluice.connectors.kafka import produce_file

    try:
        count = produce_file(bootstrap_servers, topic, file, key=key, format=fmt)
    except SluiceError as exc:
        fail(exc)
    console.print(f"produced {count:,} record(s) to {topic}")


@actions_app.command("list")
def actions_list(
    status: Annotated[
        str | None, typer.Option(help="pending, delivered, failed, dead, awaiting_approval, ...")
    ] = None,
    pipeline: Annotated[str | None, typer.Option(help="only this pipeline")] = None,
    rule: Annotated[str | None, typer.Option("--rule", help="only this action rule")] = None,
    limit: Annotated[int, typer.Option(help="at most this many")] = 50,
    offset: Annotated[int, typer.Option(help="skip this many (newest first)")] = 0,
    fmt: FormatOpt = "table",
) -> None:
    """List actions with their delivery status and attempts, newest first (page with --offset)."""
    from sluice.actions.service import ActionsService

    check_format(fmt)
    try:
        service = ActionsService(settings=settings())
        rows = service.list(
            status=status, pipeline=pipeline, action=rule, limit=limit, offset=offset
        )
        total = service.count(status=status, pipeline=pipeline, action=rule)
    except SluiceError as exc:
        fail(exc)
    if fmt != "table":
        from sluice.runners.output import print_table

        flat = [{**r, "payload": json.dumps(r.get("payload"), default=str)} for r in rows]
        print_table(console, _rows_table(flat), fmt)
        return
    view = Table(
        "id", "pipeline", "rule", "key", "status", "attempts", "last error", header_style="bold"
    )
    for row in rows:
        view.add_row(
            str(row.get("id")),
            str(row.get("pipeline")),
            str(row.get("action")),
            str(row.get("key") or "-"),
            str(row.get("status")),
            str(row.get("attempts")),
            str(row.get("last_error") or ""),
        )
    console.print(view)
    shown = f"{offset + 1:,}-{offset + len(rows):,}" if rows else "none"
    more = f"; next page: --offset {offset + len(rows)}" if offset + len(rows) < total else ""
    console.print(f"[dim]showing {shown} of {total:,}{more}[/]")


def _rows_table(rows: list[dict[str, object]]) -> object:
    import pyarrow as pa

    return pa.Table.from_pylist(
        [{k: (None if v is None else str(v)) for k, v in r.items()} for r in rows]
    )


def _action_command(verb: str, action_id: int) -> None:
    from sluice.actions.service import ActionsService

    try:
        row = getattr(ActionsService(settings=settings()), verb)(action_id)
    except SluiceError as exc:
        fail(exc)
    console.print(f"action {action_id}: {row.get('status')}")


@actions_app.command()
def retry(action_id: int) -> None:
    """Queue a failed or dead action for delivery again."""
    _action_command("retry", action_id)


@actions_app.command()
def approve(action_id: int) -> None:
    """Approve an action that waits for approval."""
    _action_command("approve", action_id)


@actions_app.command()
def reject(action_id: int) -> None:
    """Reject an action that waits for approval."""
    _action_command("reject", action_id)


@pipelines_app.command("status")
def pipelines_status(
    pipeline: Annotated[
        Path | None, typer.Argument(help="pipeline file: only this pipeline (adds Kafka lag)")
    ] = None,
) -> None:
    """Last checkpoint and run of every pipeline (or one); per-partition lag for a Kafka one."""
    from sluice.config.loader import load_pipeline
    from sluice.storage.checkpoints import CheckpointStore
    from sluice.storage.db import get_engine
    from sluice.storage.runs import RunHistory

    try:
        loaded = load_pipeline(pipeline) if pipeline is not None else None
        only = loaded.name if loaded is not None else None
        engine = get_engine(str(settings().metadata_url))
        history = RunHistory(engine)
        checkpoints = [
            c
            for c in CheckpointStore(engine).all()
            if only in (None, c["pipeline"], c["pipeline"].partition("#")[0])
        ]
        if loaded is not None and not checkpoints and loaded.source.type != "kafka":
            raise SluiceError(f"pipeline {only!r} has not run yet (no checkpoint)")
        runs = {r["pipeline"]: r for r in reversed(history.recent(only, limit=500))}
        totals = history.totals()
    except SluiceError as exc:
        fail(exc)
    view = Table(
        "pipeline",
        "epochs",
        "partition tasks",
        "checkpoint at",
        "last run",
        "events in (all runs)",
        "dead-lettered (all runs)",
        header_style="bold",
    )
    for ckpt in checkpoints:
        run = runs.get(ckpt["pipeline"], {})
        total = totals.get(ckpt["pipeline"], {})
        view.add_row(
            ckpt["pipeline"],
            str(ckpt["epoch"]),
            str(ckpt["partitions"] or ""),
            str(ckpt["updated_at"]),
            str(run.get("status", "")),
            f"{total.get('events_in', 0):,}",
            f"{total.get('dead_lettered', 0):,}",
        )
    console.print(view)
    if pipeline is not None:
        _print_kafka_lag(pipeline, CheckpointStore(engine))


def _print_kafka_lag(path: Path, store: "CheckpointStore") -> None:
    from sluice.config.loader import load_pipeline
    from sluice.connectors.kafka import consumer_lag

    try:
        p = load_pipeline(path)
        if p.source.type != "kafka":
            return
        opts = p.source.options
        topics = opts.get("topic")
        lag = consumer_lag(
            str(opts.get("bootstrap_servers", "localhost:9092")),
            str(opts.get("group") or f"sluice-{p.name}"),
            [str(t) for t in (topics if isinstance(topics, list) else [topics])],
        )
    except SluiceError as exc:
        fail(exc)
    tasks = {t["task"]: t for t in store.tasks(p.name)}
    view = Table(
        "partition",
        "epoch",
        "checkpoint offset",
        "lag (records)",
        "checkpoint at",
        header_style="bold",
    )
    for part in sorted(set(lag) | set(tasks)):
        task = tasks.get(part, {})
        offset = (task.get("position") or {}).get("offsets", {}).get(part)
        view.add_row(
            part,
            str(task.get("epoch", "")),
            "" if offset is None else f"{offset:,}",
            f"{lag[part]:,}" if part in lag else "",
            str(task.get("updated_at", "")),
        )
    console.print(view)


@api_app.command("hash-key")
def hash_key(
    key: Annotated[str, typer.Argument(help="the API key to hash")],
    role: Annotated[str, typer.Option(help="read, write or admin")] = "read",
) -> None:
    """Print a keys-file line (``sha256-hash:role``) for a key; keys are stored hashed."""
    from sluice.api.auth import keys_file_line

    try:
        line = keys_file_line(key, role)
    except SluiceError as exc:
        fail(exc)
    console.print(line, highlight=False)
