"""Work that runs inside Spark tasks and Beam ``DoFn``s: Sluice's own stage code on Arrow.

Each task is a small picklable callable that rebuilds the stage it runs from the pipeline's
configuration (on the executor or worker), so the code that scores, joins and aggregates is
the very code of the local runner, fed the same rows in the same (arrival) order.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc

from sluice.config.models import ModelConfig, Pipeline
from sluice.core.context import EpochContext
from sluice.core.settings import Settings
from sluice.models.base import ModelContext, build_model
from sluice.runners.bounded import in_arrival_order
from sluice.transforms.base import Transform
from sluice.transforms.build import build_transform
from sluice.transforms.window import WindowTransform

BUCKET = "__bucket"  # a group of consecutive windows aggregated by one task
TIME, CLOSED = "__t", "__closed"  # a late row's event time (µs) and its block's horizon
WINDOWS_PER_BUCKET = 64


def windows_per_bucket(step: WindowTransform) -> int:
    """Windows per bucket: 64, or more so that a row's windows span at most two buckets."""
    return max(WINDOWS_PER_BUCKET, step.size // step.slide + 1)


def reject_late(step: WindowTransform, late: pa.Table, ctx: EpochContext) -> None:
    """Dead-letter late rows (with ``__t`` and ``__closed``) with the local runner's reasons."""
    late = in_arrival_order(late)
    for closed in pc.unique(late.column(CLOSED)).to_pylist():
        column = late.column(CLOSED)
        rows = late.filter(pc.is_null(column) if closed is None else pc.equal(column, closed))
        times = rows.column(TIME).combine_chunks()
        step.reject_late(rows.drop_columns([TIME, CLOSED]), times, closed or 0, ctx)


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table``'s columns in ``schema``'s order and types (what the engine declared)."""
    return table.select(schema.names).cast(schema)


class ScoreTask:
    """Score one group of rows (one key's, or a partition's) with a fresh model instance."""

    def __init__(self, config: ModelConfig, pipeline: str, settings: Settings) -> None:
        self.config, self.pipeline, self.settings = config, pipeline, settings

    def __call__(self, table: pa.Table) -> pa.Table:
        """The rows in arrival order with the model's output columns."""
        model = build_model(self.config, ModelContext(self.pipeline, self.settings))
        model.start()
        try:
            return model.score(in_arrival_order(table)) if table.num_rows else model.score(table)
        finally:
            model.close()


class StepTask:
    """Apply transform steps (stateless ones, or a frozen enrich) to each table."""

    def __init__(self, steps: list[Transform]) -> None:
        self.steps = steps

    def __call__(self, table: pa.Table) -> pa.Table:
        """``table`` through every step (rejects of data errors are not recorded here)."""
        ctx = EpochContext("task", 0)
        for step in self.steps:
            table = step.apply(table, ctx)
        return table


class BatchesTask:
    """A table-to-table task over a stream of record batches (Spark's ``mapInArrow``)."""

    def __init__(self, task: StepTask | ScoreTask, schema: pa.Schema) -> None:
        self.task, self.schema = task, schema

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """Each incoming batch, transformed and conformed to the declared schema."""
        for batch in batches:
            out = conform(self.task(pa.Table.from_batches([batch])), self.schema)
            yield from out.to_batches()


class WindowTask:
    """Aggregate the windows of one bucket (``per_bucket`` consecutive windows) with DuckDB."""

    def __init__(self, pipeline: Pipeline, index: int, per_bucket: int) -> None:
        self.pipeline, self.index, self.per_bucket = pipeline, index, per_bucket

    def transform(self) -> WindowTransform:
        """The pipeline's window step, rebuilt from its configuration."""
        step = build_transform(
            self.pipeline.transforms[self.index],
            self.index,
            event_time=self.pipeline.event_time,
            settings=Settings(),
        )
        assert isinstance(step, WindowTransform)
        return step

    def __call__(self, table: pa.Table) -> pa.Table:
        """The aggregates of the bucket's windows over its on-time rows (arrival order)."""
        window = self.transform()
        try:
            if table.num_rows == 0:
                return window.aggregate_range(table, 0, -1, EpochContext("task", 0))
            bucket = int(table.column(BUCKET)[0].as_py())
            low = bucket * self.per_bucket
            return window.aggregate_range(
                in_arrival_order(table), low, low + self.per_bucket - 1, EpochContext("task", 0)
            )
        finally:
            window.duck.close()
