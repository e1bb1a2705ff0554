"""A pipeline's transforms and models as a Spark DataFrame plan.

* ``filter`` / ``derive``: the DuckDB expressions translated by sqlglot (``spark_sql``) and
  run as Spark SQL; ``select`` / ``rename`` as projections.
* ``enrich``: the lookup is read once on the driver and shipped to every task with the task
  (a broadcast), where Sluice's own join runs (``mapInArrow``).
* ``window``: the local runner's lateness rules (windows close ``allowed_lateness`` after
  the largest event time of earlier micro-batches), then a ``groupBy`` on buckets of
  consecutive window indices whose tasks aggregate with the local runner's DuckDB SQL, in
  arrival order - so counts, sums and every DuckDB aggregate equal the local runner's to the
  bit (a native Spark ``sum`` of doubles depends on the shuffle order).
* models: an online model learns across its keys (``online_anomaly`` mutes a global regime
  change that most keys share), so it scores like the local runner only when one detector
  sees every key: ``model_partitions`` groups of keys (``groupBy(pmod(hash(key), n))
  .applyInArrow``, rows in arrival order; default 1, exactly the local runner; ``n`` > 1 is
  what ``n`` Kafka partitions give). Other models run batch by batch (``mapInArrow``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from sluice.config.models import Pipeline
from sluice.core.context import EpochContext
from sluice.core.errors import ConfigError
from sluice.core.settings import Settings
from sluice.runners.arrow_tasks import (
    BUCKET,
    CLOSED,
    TIME,
    BatchesTask,
    ScoreTask,
    StepTask,
    WindowTask,
    conform,
    reject_late,
    windows_per_bucket,
)
from sluice.runners.bounded import BLOCK, SEQ, closed_before
from sluice.runners.spark_sql import to_spark
from sluice.runners.stages import Stages
from sluice.transforms.base import Transform
from sluice.transforms.enrich import EnrichTransform
from sluice.transforms.sql import DeriveTransform, FilterTransform, RenameTransform, SelectTransform
from sluice.transforms.window import WindowTransform

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

_LATE = "__late"
PART = "__part"  # the group of keys an online model scores


class SparkPlan:
    """Compiles the stages of a pipeline to DataFrame operations (translation is pure)."""

    def __init__(
        self, pipeline: Pipeline, settings: Settings, stages: Stages, model_partitions: int = 1
    ) -> None:
        self.pipeline, self.settings, self.stages = pipeline, settings, stages
        self.model_partitions = model_partitions
        self.sql: dict[int, dict[str, str]] = {}
        for index, step in enumerate(stages.transforms):
            self.sql[index] = self._translate(step, index)

    def _translate(self, step: Transform, index: int) -> dict[str, str]:
        if isinstance(step, FilterTransform):
            return {"": to_spark(step.condition, step.key)}
        if isinstance(step, DeriveTransform):
            return {c: to_spark(e, f"{step.key}.{c}") for c, e in step.columns.items()}
        if isinstance(step, SelectTransform | RenameTransform | EnrichTransform | WindowTransform):
            return {}
        raise ConfigError(
            f"{step.name} is not supported by --runner spark yet",
            key=f"transforms[{index}].{step.name}",
        )

    # -- building ------------------------------------------------------------------------
    def build(
        self, spark: SparkSession, df: DataFrame, ctx: EpochContext, blocks: int, *, dry: bool
    ) -> tuple[DataFrame, dict[str, DataFrame]]:
        """The plan over ``df``; ``dry`` (empty input) only binds it, running no Spark job."""
        from pyspark.errors import AnalysisException

        side: dict[str, DataFrame] = {}
        for index, step in enumerate(self.stages.transforms):
            try:
                df = self._step(spark, df, index, step, ctx, blocks, side, dry=dry)
                df.schema  # noqa: B018 - binds the step now, so errors name it
            except AnalysisException as exc:
                raise ConfigError(spark_error(exc), key=f"transforms[{index}]") from None
        for i, model in enumerate(self.stages.models):
            try:
                df = self._score(df, model.config.key, ScoreTask(model.config, *self._ids()), i)
            except AnalysisException as exc:
                raise ConfigError(spark_error(exc), key=f"models[{i}]") from None
        return df, side

    def _ids(self) -> tuple[str, Settings]:
        return self.pipeline.name, self.settings

    def _step(
        self,
        spark: SparkSession,
        df: DataFrame,
        index: int,
        step: Transform,
        ctx: EpochContext,
        blocks: int,
        side: dict[str, DataFrame],
        *,
        dry: bool,
    ) -> DataFrame:
        from pyspark.sql import functions as sf

        sql = self.sql[index]
        if isinstance(step, FilterTransform):
            return df.filter(sf.expr(sql[""]))
        if isinstance(step, DeriveTransform):
            for column in step.columns:
                df = df.withColumn(column, sf.expr(sql[column]))
            return df
        if isinstance(step, SelectTransform):
            internal = [c for c in df.columns if c.startswith("__") and c not in step.columns]
            return df.select(*step.columns, *internal)
        if isinstance(step, RenameTransform):
            return df.withColumnsRenamed(step.mapping)
        if isinstance(step, EnrichTransform):
            step.freeze()
            return map_tables(df, StepTask([step]))
        assert isinstance(step, WindowTransform)
        windows, df = self._window(spark, df, step, ctx, blocks, dry=dry)
        if step.into is None:
            return windows
        side[step.into] = windows
        return df

    def _score(self, df: DataFrame, key: str | None, task: ScoreTask, i: int) -> DataFrame:
        from pyspark.sql import functions as sf

        if not self.stages.models[i].online:
            schema = task(arrow_schema(df).empty_table()).schema
            return df.mapInArrow(BatchesTask(task, schema), spark_type(schema))
        parts = self.model_partitions
        group = sf.lit(0) if key is None or parts == 1 else sf.pmod(sf.hash(key), sf.lit(parts))
        df = df.withColumn(PART, group)
        schema = task(arrow_schema(df).empty_table()).schema
        scored = df.groupBy(PART).applyInArrow(group_function(task, schema), spark_type(schema))
        return scored.drop(PART)

    # -- windows ---------------------------------------------------------------------------
    def _window(
        self,
        spark: SparkSession,
        df: DataFrame,
        step: WindowTransform,
        ctx: EpochContext,
        blocks: int,
        *,
        dry: bool,
    ) -> tuple[DataFrame, DataFrame]:
        """(the windows, the stream) for a window step; late rows go to ``ctx``."""
        from pyspark.sql import functions as sf

        step.output_schema(arrow_schema(df))
        df = df.withColumn(TIME, sf.unix_micros(sf.col(step.time).cast("timestamp")))
        closed = {} if dry else self._closed(df, step, blocks)
        if closed:
            horizon = spark.createDataFrame(list(closed.items()), f"{BLOCK} int, {CLOSED} long")
            df = df.join(sf.broadcast(horizon), on=BLOCK, how="left")
        else:
            df = df.withColumn(CLOSED, sf.lit(None).cast("long"))
        first_end = (floor_div(sf.col(TIME) - step.size, step.slide) + 1) * step.slide + step.size
        late = sf.col(TIME).isNull() | (sf.col(CLOSED).isNotNull() & (first_end <= sf.col(CLOSED)))
        df = df.withColumn(_LATE, late)
        if not dry:
            self._reject_late(df, step, ctx)
        windows = self._aggregate(df.where(~sf.col(_LATE)), step)
        return windows, df.drop(TIME, _LATE, CLOSED)

    def _closed(self, df: DataFrame, step: WindowTransform, blocks: int) -> dict[int, int]:
        from pyspark.sql import functions as sf

        maxima = df.where(sf.col(TIME).isNotNull()).groupBy(BLOCK).agg(sf.max(TIME)).collect()
        return closed_before({int(r[0]): int(r[1]) for r in maxima}, step.lateness, blocks)

    def _reject_late(self, df: DataFrame, step: WindowTransform, ctx: EpochContext) -> None:
        from pyspark.sql import functions as sf

        late = df.where(sf.col(_LATE)).drop(_LATE).toArrow()
        if late.num_rows:
            reject_late(step, late, ctx)

    def _aggregate(self, on_time: DataFrame, step: WindowTransform) -> DataFrame:
        from pyspark.sql import functions as sf

        per_bucket = windows_per_bucket(step)
        first = floor_div(sf.col(TIME) - step.size, step.slide) + 1
        last = floor_div(sf.col(TIME), step.slide)
        bucket = sf.array_distinct(
            sf.array(floor_div(first, per_bucket), floor_div(last, per_bucket))
        )
        columns = [*step.keys, *sorted(step.needed - set(step.keys)), step.time, SEQ, TIME]
        rows = on_time.select(*dict.fromkeys(columns)).withColumn(BUCKET, sf.explode(bucket))
        task = WindowTask(self.pipeline, self.stages.transforms.index(step), per_bucket)
        schema = task(arrow_schema(rows).empty_table()).schema
        return rows.groupBy(BUCKET).applyInArrow(group_function(task, schema), spark_type(schema))


def group_function(
    task: ScoreTask | WindowTask, schema: pa.Schema
) -> Callable[[pa.Table], pa.Table]:
    """``task`` as the typed function ``applyInArrow`` expects, conformed to ``schema``."""

    def run(table: pa.Table) -> pa.Table:
        return conform(task(table), schema)

    return run


def map_tables(df: DataFrame, task: StepTask) -> DataFrame:
    """``task`` over every partition of ``df`` (``mapInArrow``)."""
    schema = task(arrow_schema(df).empty_table()).schema
    return df.mapInArrow(BatchesTask(task, schema), spark_type(schema))


def floor_div(value: Column, divisor: int) -> Column:
    """Exact floor division of a long column by a positive integer."""
    from pyspark.sql import functions as sf

    return ((value - sf.pmod(value, sf.lit(divisor))) / divisor).cast("long")


def arrow_schema(df: DataFrame) -> pa.Schema:
    """The Arrow schema of ``df``'s rows as tasks receive them."""
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(df.schema, timezone="UTC")


def spark_type(schema: pa.Schema) -> Any:
    """The Spark schema of Arrow ``schema``."""
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema, prefer_timestamp_ntz=False)


def spark_error(exc: BaseException) -> str:
    """The first line of a Spark analysis error."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
