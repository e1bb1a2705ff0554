"""Run a pipeline file the way a user does and read back what it wrote to the lake.

Every evaluation goes through here: the data is written to a file, a pipeline file (file
source, schema, event time, ``online_anomaly`` models, a lake sink) is written beside it,
the real runner runs it until idle under its own ``SLUICE_HOME``, and the figures come from
the Delta table's columns (``<m>_score``, ``<m>_anomaly``, ``<m>_onset``, ``<m>_reason``).
Each input row carries a ``seq`` column (its row number), so the lake rows are put back in
input order whatever order the table files hold them in.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sluice.core.errors import SluiceError
from sluice.core.settings import Settings

MODEL = "det"
TABLE = "scored"
SEQ = "seq"


@dataclass
class DetectorSpec:
    """An ``online_anomaly`` model of an evaluation pipeline."""

    features: list[str]
    key: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    name: str = MODEL

    def as_config(self) -> dict[str, Any]:
        """The model entry of the pipeline file."""
        entry: dict[str, Any] = {"name": self.name, "type": "online_anomaly"}
        entry["features"] = list(self.features)
        if self.key:
            entry["key"] = self.key
        return {**entry, **self.options}


@dataclass
class LakeRun:
    """The lake table of one run, in input order, and how long the run took."""

    table: pa.Table
    seconds: float
    epochs: int = 0

    def column(self, name: str) -> np.ndarray:
        """A column as a numpy array (strings and labels as objects)."""
        return self.table.column(name).to_numpy(zero_copy_only=False)

    def output(self, suffix: str, model: str = MODEL) -> np.ndarray:
        """A model's ``<m>_<suffix>`` column: ``score``, ``anomaly``, ``onset`` or ``reason``."""
        return self.column(f"{model}_{suffix}")


def with_seq(table: pa.Table) -> pa.Table:
    """``table`` with its row numbers as a leading ``seq`` column."""
    return table.add_column(0, SEQ, pa.array(np.arange(table.num_rows, dtype=np.int64)))


def pipeline_text(
    name: str,
    data: Path,
    schema: dict[str, str],
    detectors: list[DetectorSpec],
    *,
    event_time: str | None = None,
    batch: dict[str, Any] | None = None,
) -> str:
    """A pipeline file: file source → schema → ``online_anomaly`` → an unpartitioned lake table."""
    doc: dict[str, Any] = {
        "name": name,
        "source": {"type": "file", "path": str(data), "format": "json"},
        "schema": {SEQ: "long", **schema},
    }
    if event_time:
        doc["event_time"] = event_time
    if batch:
        doc["batch"] = batch
    doc["models"] = [d.as_config() for d in detectors]
    doc["sinks"] = [{"type": "lake", "table": TABLE, "partition_by": "none"}]
    return yaml.safe_dump(doc, sort_keys=False)


@contextmanager
def workspace(workdir: Path | None = None) -> Iterator[Path]:
    """A directory for the data, pipeline file and ``SLUICE_HOME`` (temporary by default)."""
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        yield workdir
        return
    with tempfile.TemporaryDirectory(prefix="sluice-eval-") as tmp:
        yield Path(tmp)


def write_input(table: pa.Table, path: Path) -> Path:
    """Write ``table`` (with a ``seq`` column) as JSON lines."""
    from sluice.sources.synthetic import write_jsonl

    return write_jsonl(table if SEQ in table.column_names else with_seq(table), path)


def run_pipeline(
    pipeline: Path,
    home: Path,
    *,
    events: int | None = None,
    console: Console | None = None,
) -> LakeRun:
    """Run ``pipeline`` until idle with ``SLUICE_HOME=home``; return its lake table by ``seq``."""
    from sluice.config.loader import load_pipeline
    from sluice.runners.create import create_runner

    p = load_pipeline(pipeline)
    settings = Settings(home=home)
    started = time.perf_counter()
    with _progress(console, p.name, events) as on_progress:
        stats = create_runner(p, settings, until_idle=True, on_progress=on_progress).run()
    seconds = time.perf_counter() - started
    if stats.dead_lettered:
        raise SluiceError(f"pipeline {p.name}: {stats.dead_lettered} events were dead-lettered")
    return LakeRun(read_lake(settings, TABLE), seconds, stats.epochs)


def read_lake(settings: Settings, table: str) -> pa.Table:
    """The whole lake table, sorted by ``seq``."""
    from sluice.storage.lake_tables import open_delta

    delta = open_delta(settings.lake_path(table))
    if delta is None:
        raise SluiceError(f"the run wrote no lake table {table!r}")
    data = delta.to_pyarrow_table()
    return data.sort_by(SEQ) if SEQ in data.column_names else data


def run_table(
    name: str,
    data: pa.Table,
    schema: dict[str, str],
    detectors: DetectorSpec | list[DetectorSpec],
    *,
    event_time: str | None = None,
    batch: dict[str, Any] | None = None,
    console: Console | None = None,
    workdir: Path | None = None,
) -> LakeRun:
    """Write ``data`` and a pipeline over it, run it, and return the lake table in input order."""
    models = detectors if isinstance(detectors, list) else [detectors]
    with workspace(workdir) as work:
        path = write_input(data, work / f"{name}.jsonl")
        pipeline = work / f"{name}.yaml"
        pipeline.write_text(
            pipeline_text(name, path, schema, models, event_time=event_time, batch=batch)
        )
        run = run_pipeline(pipeline, work / "home", events=data.num_rows, console=console)
    if run.table.num_rows != data.num_rows:
        raise SluiceError(f"{name}: the lake holds {run.table.num_rows} of {data.num_rows} rows")
    return run


@contextmanager
def _progress(console: Console | None, name: str, events: int | None) -> Iterator[Any]:
    if console is None or not console.is_terminal:
        yield None
        return
    bar = Progress(
        TextColumn(f"[bold]{name}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("events"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    task = bar.add_task(name, total=events)
    with bar:
        yield lambda stats: bar.update(task, completed=stats.events_in)
