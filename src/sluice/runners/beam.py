"""``sluice run --runner beam``: a bounded pipeline run as one Apache Beam pipeline.

Arrow tables flow through ``DoFn``s that run Sluice's own stage code: the DuckDB ``filter`` /
``derive`` steps (no translation), the frozen ``enrich`` lookup, the window's lateness rules
(block maxima as a side input) and its DuckDB aggregates per bucket of windows
(``GroupByKey``), and online models over ``model_partitions`` groups of keys in arrival order
(``GroupByKey``, one fresh model per group; default 1, exactly the local runner). The outputs
are written as Arrow files to a staging folder under ``SLUICE_HOME`` and committed by the
driver (see ``bounded``); a retried bundle's rows are recognised by their
``__seq`` (windows by key and start) and kept once.

Beam's own options choose the runner (``--beam-option runner=FlinkRunner`` ...); the default
is the ``DirectRunner``. A distributed runner needs the staging folder on storage its
workers share.
"""

from __future__ import annotations

import shutil
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sluice.config.models import Pipeline
from sluice.core.batch import concat
from sluice.core.context import EpochContext
from sluice.core.deps import require
from sluice.core.errors import ConfigError
from sluice.core.settings import Settings
from sluice.runners.arrow_tasks import (
    BUCKET,
    CLOSED,
    TIME,
    ScoreTask,
    StepTask,
    WindowTask,
    reject_late,
    windows_per_bucket,
)
from sluice.runners.bounded import (
    BLOCK,
    SEQ,
    BatchRunner,
    JobInput,
    JobOutput,
    check_parts,
    closed_before,
    in_arrival_order,
)
from sluice.transforms.dedupe import DedupeTransform
from sluice.transforms.enrich import EnrichTransform
from sluice.transforms.window import WindowTransform, event_time_us

CHUNK_ROWS = 50_000  # rows per element of the input PCollection


class BeamRunner(BatchRunner):
    """Runs a pipeline over its bounded input as one Beam pipeline, committed as one epoch."""

    engine = "beam"

    def __init__(
        self,
        pipeline: Pipeline,
        settings: Settings | None = None,
        *,
        beam_options: list[str] | None = None,
        model_partitions: int = 1,
        **options: Any,
    ) -> None:
        super().__init__(pipeline, settings, **options)
        self.model_partitions = check_parts(model_partitions)
        self.beam_options = [f"--{o.removeprefix('--')}" for o in beam_options or []]
        for index, step in enumerate(self.stages.transforms):
            if isinstance(step, DedupeTransform):
                raise ConfigError(
                    "dedupe is not supported by --runner beam yet",
                    key=f"transforms[{index}].dedupe",
                )

    def prepare(self) -> None:
        """Check that the Beam SDK is installed."""
        require("apache_beam", "beam", "--runner beam")

    def execute(self, job: JobInput) -> JobOutput:
        """Run the Beam pipeline; read back its staged outputs on the driver."""
        import apache_beam as beam
        from apache_beam.options.pipeline_options import PipelineOptions

        staging = Path(self.settings.home) / "beam" / uuid.uuid4().hex
        staging.mkdir(parents=True)
        blocks = int(job.table.column(BLOCK)[-1].as_py()) + 1 if job.table.num_rows else 0
        options = PipelineOptions(["--runner=DirectRunner", *self.beam_options])
        try:
            with beam.Pipeline(options=options) as p:
                rows = p | "input" >> beam.Create(chunks(job.table), reshuffle=False)
                side = self._transforms(beam, rows, blocks, staging)
                for name, windows in side.items():
                    _ = windows | f"write {name}" >> beam.FlatMap(
                        WriteTables(staging, f"side-{name}").process
                    )
            return self._read_back(staging, job.ctx)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _transforms(self, beam: Any, rows: Any, blocks: int, staging: Path) -> dict[str, Any]:
        side: dict[str, Any] = {}
        for index, step in enumerate(self.stages.transforms):
            if isinstance(step, WindowTransform):
                windows = self._window(beam, rows, index, step, blocks, staging)
                if step.into is None:
                    rows = windows
                else:
                    side[step.into] = windows
                continue
            if isinstance(step, EnrichTransform):
                step.freeze()
            apply = ApplySteps(StepTask([step])).process
            applied = rows | f"step {index}" >> beam.FlatMap(apply).with_outputs(
                "dead", main="rows"
            )
            _ = applied.dead | f"dead {index}" >> beam.FlatMap(WriteTables(staging, "dead").process)
            rows = applied.rows
        for i, model in enumerate(self.stages.models):
            task = ScoreTask(model.config, self.pipeline.name, self.settings)
            key = model.config.key
            if model.online:
                rows = (
                    rows
                    | f"key {i}" >> beam.FlatMap(split_by, key, self.model_partitions)
                    | f"group {i}" >> beam.GroupByKey()
                    | f"score {i}"
                    >> beam.MapTuple(lambda _k, tables, t=task: t(concat(list(tables))))
                )
            else:
                rows = rows | f"score {i}" >> beam.Map(task)
        _ = rows | "write rows" >> beam.FlatMap(WriteTables(staging, "rows").process)
        return side

    def _window(
        self, beam: Any, rows: Any, index: int, step: WindowTransform, blocks: int, staging: Path
    ) -> Any:
        """The windows of ``step`` over ``rows``; late rows are staged for the dead letters."""
        maxima = (
            rows
            | f"maxima {index}" >> beam.FlatMap(block_maxima, step.time)
            | f"max {index}" >> beam.CombinePerKey(max)
        )
        marked = rows | f"late {index}" >> beam.FlatMap(
            MarkLate(step, blocks).process, beam.pvalue.AsDict(maxima)
        ).with_outputs("late", main="on_time")
        _ = marked.late | f"write late {index}" >> beam.FlatMap(
            WriteTables(staging, f"late-{index}").process
        )
        per_bucket = windows_per_bucket(step)
        task = WindowTask(self.pipeline, index, per_bucket)
        return (
            marked.on_time
            | f"buckets {index}" >> beam.FlatMap(split_buckets, step, per_bucket)
            | f"group {index}" >> beam.GroupByKey()
            | f"aggregate {index}"
            >> beam.MapTuple(lambda _b, tables, t=task: t(concat(list(tables))))
        )

    def _read_back(self, staging: Path, ctx: EpochContext) -> JobOutput:
        rows = read_tables(staging, "rows")
        if rows is None:
            table = pa.table({})
        elif SEQ in rows.column_names:
            table = in_arrival_order(unique_rows(rows, [SEQ]))
        else:
            table = rows
        for index, step in enumerate(self.stages.transforms):
            late = read_tables(staging, f"late-{index}")
            if isinstance(step, WindowTransform) and late is not None:
                reject_late(step, unique_rows(late, [SEQ]), ctx)
        dead = read_tables(staging, "dead")
        if dead is not None:
            ctx.dead_letters.append(dead)
            ctx.counters["dead_lettered"] += dead.num_rows
        side = {}
        for step in self.stages.transforms:
            if isinstance(step, WindowTransform) and step.into is not None:
                windows = read_tables(staging, f"side-{step.into}")
                if windows is not None:
                    side[step.into] = unique_rows(windows, [*step.keys, "window_start"])
        return JobOutput(table, side)


# -- DoFns and the functions they run (picklable, module level) --------------------------------
class ApplySteps:
    """A Beam step's body: transform steps over a table; data-error rejects go to ``dead``."""

    def __init__(self, task: StepTask) -> None:
        self.task = task

    def process(self, table: pa.Table) -> Iterator[Any]:
        """The transformed table, and the rows its SQL rejected (tagged ``dead``)."""
        from apache_beam import pvalue

        ctx = EpochContext("beam", 0)
        for step in self.task.steps:
            table = step.apply(table, ctx)
        yield table
        for dead in ctx.dead_letters:
            yield pvalue.TaggedOutput("dead", dead)


class MarkLate:
    """A Beam step's body: split each table into on-time rows and late rows (local rules)."""

    def __init__(self, step: WindowTransform, blocks: int) -> None:
        self.step, self.blocks = step, blocks

    def process(self, table: pa.Table, maxima: dict[int, int]) -> Iterator[Any]:
        """On-time rows (main output) and late ones with their time and horizon (``late``)."""
        from apache_beam import pvalue

        closed = closed_before(maxima, self.step.lateness, self.blocks)
        times = event_time_us(table, self.step.time, self.step.key)
        horizon = pa.array([closed.get(b) for b in table.column(BLOCK).to_pylist()], pa.int64())
        values = times.fill_null(0).to_numpy()
        known = np.asarray(horizon.is_valid())
        ends = self.step.first_end(values)
        late = np.asarray(times.is_null()) | (known & (ends <= horizon.fill_null(0).to_numpy()))
        yield table.filter(pa.array(~late))
        if late.any():
            rows = table.filter(pa.array(late))
            rows = rows.append_column(TIME, times.filter(pa.array(late)))
            yield pvalue.TaggedOutput("late", rows.append_column(CLOSED, horizon.filter(late)))


class WriteTables:
    """A Beam step's body: write each non-empty table as an Arrow file ``TAG-<uuid>.arrow``."""

    def __init__(self, folder: Path, tag: str) -> None:
        self.folder, self.tag = str(folder), tag

    def process(self, table: pa.Table) -> Iterator[None]:
        """Write ``table`` (nothing downstream)."""
        if table.num_rows:
            path = Path(self.folder) / f"{self.tag}-{uuid.uuid4().hex}.arrow"
            with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
                w.write_table(table)
        yield from ()


def chunks(table: pa.Table) -> list[pa.Table]:
    """``table`` cut into elements of at most ``CHUNK_ROWS`` rows."""
    return [table.slice(i, CHUNK_ROWS) for i in range(0, table.num_rows, CHUNK_ROWS)]


def split_by(table: pa.Table, key: str | None, parts: int) -> Iterator[tuple[int, pa.Table]]:
    """``(partition, its rows)``: keys spread over ``parts`` partitions by a stable hash."""
    if key is None or parts == 1:
        yield 0, table
        return
    column = table.column(key)
    values = pc.unique(column).drop_null()
    part_of = np.array([zlib.crc32(str(v).encode()) % parts for v in values.to_pylist()])
    for part in np.unique(part_of):
        mask = pc.is_in(column, value_set=values.filter(pa.array(part_of == part)))
        if part == 0:
            mask = pc.or_kleene(mask, pc.is_null(column))
        yield int(part), table.filter(mask)
    if 0 not in part_of and column.null_count:
        yield 0, table.filter(pc.is_null(column))


def block_maxima(table: pa.Table, time: str) -> Iterator[tuple[int, int]]:
    """``(block, largest event time in µs)`` for each block of ``table``."""
    times = event_time_us(table, time, "window")
    keep = pc.is_valid(times)
    grouped = pa.table({"b": table.column(BLOCK).filter(keep), "t": times.filter(keep)})
    for row in grouped.group_by("b").aggregate([("t", "max")]).to_pylist():
        yield int(row["b"]), int(row["t_max"])


def split_buckets(
    table: pa.Table, step: WindowTransform, per_bucket: int
) -> Iterator[tuple[int, pa.Table]]:
    """``(bucket, rows)``: each row under the bucket(s) of consecutive windows it falls in."""
    times = event_time_us(table, step.time, step.key).to_numpy()
    first, last = step.window_index(times)
    low, high = first // per_bucket, last // per_bucket
    for bucket in np.union1d(low, high):
        mask = (low == bucket) | (high == bucket)
        rows = table.filter(pa.array(mask))
        yield int(bucket), rows.append_column(BUCKET, pa.repeat(pa.scalar(int(bucket)), len(rows)))


def read_tables(folder: Path, tag: str) -> pa.Table | None:
    """Every Arrow file ``TAG-*.arrow`` in ``folder`` as one table (None when there is none)."""
    tables = []
    for path in sorted(folder.glob(f"{tag}-*.arrow")):
        with pa.memory_map(str(path)) as source:
            tables.append(pa.ipc.open_file(source).read_all())
    return concat(tables) if tables else None


def unique_rows(table: pa.Table, keys: list[str]) -> pa.Table:
    """``table`` with one row per ``keys`` value (a retried bundle may have written twice)."""
    index = pa.array(np.arange(table.num_rows))
    first = (
        table.select(keys)
        .append_column("__i", index)
        .group_by(keys, use_threads=False)
        .aggregate([("__i", "min")])
        .column("__i_min")
    )
    return table.take(pc.sort_indices(first))
