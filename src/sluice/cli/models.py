"""``sluice models``: list, train, promote, rollback, evaluate."""

import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from sluice.cli.common import console, fail, settings
from sluice.core.errors import SluiceError

if TYPE_CHECKING:
    from sluice.evaluation import Evaluation

app = typer.Typer(no_args_is_help=True, help="The model registry: train, evaluate, promote.")


@app.command("list")
def list_models(name: Annotated[str | None, typer.Argument(help="only this model")] = None) -> None:
    """List registered versions and online models."""
    from sluice.models.registry import ModelRegistry, OnlineModelIndex

    try:
        versions = ModelRegistry(settings()).list(name)
        online = OnlineModelIndex(settings()).list()
    except SluiceError as exc:
        fail(exc)
    view = Table("name", "version", "stage", "type", "features", "metrics", header_style="bold")
    for v in versions:
        metrics = ", ".join(
            f"{k}={val:.3f}" if isinstance(val, float) else f"{k}={val}"
            for k, val in list(v.metrics.items())[:4]
        )
        view.add_row(v.name, str(v.version), v.stage, v.format, ", ".join(v.features), metrics)
    for m in online:
        if name in (None, m.name):
            view.add_row(m.name, "-", f"online in {m.pipeline}", m.type, ", ".join(m.features), "")
    console.print(view)


@app.command()
def train(
    name: Annotated[str, typer.Argument(help="model name in the registry")],
    table: Annotated[str, typer.Option(help="lake or warehouse table to train on")],
    model_type: Annotated[
        str, typer.Option("--type", help="isolation_forest, autoencoder or text_classifier")
    ] = "isolation_forest",
    features: Annotated[str, typer.Option(help="comma-separated feature columns")] = "",
    label: Annotated[str | None, typer.Option(help="label column (evaluation / text)")] = None,
    time_column: Annotated[str | None, typer.Option("--time", help="time column")] = None,
    since: Annotated[str | None, typer.Option(help="train on rows at or after this time")] = None,
    until: Annotated[str | None, typer.Option(help="train on rows before this time")] = None,
    promote: Annotated[bool, typer.Option(help="promote to production when done")] = False,
) -> None:
    """Train a model on lake data and register it as a candidate."""
    from sluice.models.registry import ModelRegistry
    from sluice.models.train import TrainSpec
    from sluice.models.train import train as run_training
    from sluice.runners.progress import step

    spec = TrainSpec(
        name=name,
        kind=model_type,
        table=table,
        features=[f.strip() for f in features.split(",") if f.strip()],
        label=label,
        time_column=time_column,
        since=since,
        until=until,
    )
    try:
        with step(console, f"training {name} ({model_type}) on {table}..."):
            version = run_training(settings(), spec)
        if promote:
            version = ModelRegistry(settings()).promote(name, version.version)
    except SluiceError as exc:
        fail(exc)
    console.print(
        f"[green]registered[/] {name} v{version.version} ({version.stage}) "
        f"metrics: {json.dumps(version.metrics, default=str)}"
    )


@app.command()
def promote(name: str, version: int) -> None:
    """Make a version the production one (running pipelines pick it up at the next checkpoint)."""
    from sluice.models.registry import ModelRegistry

    try:
        v = ModelRegistry(settings()).promote(name, version)
    except SluiceError as exc:
        fail(exc)
    console.print(f"[green]promoted[/] {v.name} v{v.version} to production")


@app.command()
def rollback(name: str) -> None:
    """Return to the previous production version."""
    from sluice.models.registry import ModelRegistry

    try:
        v = ModelRegistry(settings()).rollback(name)
    except SluiceError as exc:
        fail(exc)
    console.print(f"[green]rolled back[/] {v.name} to v{v.version}")


@app.command()
def evaluate(
    name: Annotated[
        str | None, typer.Argument(help="registered model (omit with --dataset)")
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option(
            help="nab, generator, multivariate, null or rate7: run online_anomaly with default "
            "settings through a pipeline and score the lake's columns"
        ),
    ] = None,
    table: Annotated[str | None, typer.Option(help="labelled table for a registered model")] = None,
    label: Annotated[str | None, typer.Option(help="label column of --table")] = None,
    nab_path: Annotated[
        str | None,
        typer.Option(
            help="NAB data folder (default: found beside the repository or SLUICE_NAB_PATH)"
        ),
    ] = None,
    river: Annotated[
        bool, typer.Option("--river", help="add River HalfSpaceTrees to the baselines (slower)")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the figures as JSON")] = False,
) -> None:
    """Evaluate on labelled data: a built-in data set through a pipeline, or a registered model."""
    from sluice.evaluation import evaluate_dataset
    from sluice.evaluation.registered import evaluate_registered

    try:
        if dataset:
            result = evaluate_dataset(
                dataset, nab_path=nab_path, river=river, console=None if as_json else console
            )
            _print_evaluation(result, as_json)
        elif name and table and label:
            metrics = evaluate_registered(settings(), name, table, label)
            if as_json:
                console.print_json(json.dumps(metrics, default=str))
            else:
                _print_metrics(f"{name} on {table}", metrics)
        else:
            raise SluiceError(
                "give --dataset nab|generator|multivariate|null|rate7, "
                "or NAME --table T --label COLUMN"
            )
    except SluiceError as exc:
        fail(exc)


def _print_metrics(title: str, metrics: dict[str, object]) -> None:
    view = Table(title=title, show_header=False, title_justify="left")
    for key, value in metrics.items():
        view.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value))
    console.print(view)


def _print_evaluation(result: "Evaluation", as_json: bool) -> None:
    if as_json:
        print(json.dumps(result.as_dict(), default=str))
        return
    console.print(f"[bold]{result.description}[/] ({result.seconds:.1f} s)")
    for figures in result.tables:
        view = Table(*figures.columns, title=figures.title, title_justify="left")
        for row in figures.rows:
            view.add_row(*row)
        console.print(view)
