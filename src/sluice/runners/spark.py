"""``sluice run --runner spark``: a bounded pipeline run as one Spark job (see ``bounded``).

The session is the active one (tests), Spark Connect when ``SPARK_REMOTE`` is set, or a new
one on ``--master`` (default ``local[*]``). Sessions it creates are configured for Sluice's
semantics: UTC session time zone, non-ANSI SQL (a failing cast or a division by zero gives
NULL, as DuckDB does, rather than failing the job), Arrow transfers.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from sluice.config.models import Pipeline
from sluice.core.context import EpochContext
from sluice.core.deps import require
from sluice.core.settings import Settings
from sluice.runners.bounded import (
    BLOCK,
    BatchRunner,
    JobInput,
    JobOutput,
    check_parts,
    in_arrival_order,
)
from sluice.runners.spark_plan import SparkPlan, spark_type

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

LOCAL_SHUFFLE_PARTITIONS = 8  # not 200: each shuffle task of a grouped map starts Python work
SESSION_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.ansi.enabled": "false",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
}


class SparkRunner(BatchRunner):
    """Runs a pipeline over its bounded input as one Spark job, committed as one epoch."""

    engine = "spark"

    def __init__(
        self,
        pipeline: Pipeline,
        settings: Settings | None = None,
        *,
        master: str | None = None,
        model_partitions: int = 1,
        **options: Any,
    ) -> None:
        super().__init__(pipeline, settings, **options)
        self.master = master
        # translates all SQL now: what does not translate is refused before anything runs
        self.plan = SparkPlan(pipeline, self.settings, self.stages, check_parts(model_partitions))
        self.spark: SparkSession | None = None
        self._owned = False

    def prepare(self) -> None:
        """Start (or join) the Spark session."""
        self.spark, self._owned = spark_session(self.master, f"sluice-{self.pipeline.name}")

    def execute(self, job: JobInput) -> JobOutput:
        """Bind the plan on empty input, then run it and collect the outputs as Arrow."""
        assert self.spark is not None
        spark = self.spark
        blocks = int(job.table.column(BLOCK)[-1].as_py()) + 1 if job.table.num_rows else 0
        dry = EpochContext(self.pipeline.name, job.epoch)
        self.plan.build(spark, self._frame(job.table.slice(0, 0)), dry, 0, dry=True)
        df, side = self.plan.build(spark, self._frame(job.table), job.ctx, blocks, dry=False)
        return JobOutput(
            table=in_arrival_order(collect(df)),
            side_outputs={name: collect(frame) for name, frame in side.items()},
        )

    def _frame(self, table: pa.Table) -> DataFrame:
        assert self.spark is not None
        return self.spark.createDataFrame(table, schema=spark_type(table.schema))

    def close_engine(self) -> None:
        """Stop the session if this runner started it."""
        if self.spark is not None and self._owned:
            self.spark.stop()
        self.spark = None


def collect(df: DataFrame) -> pa.Table:
    """``df``'s rows as an Arrow table (on the driver)."""
    return df.toArrow()


def spark_session(master: str | None, app_name: str) -> tuple[SparkSession, bool]:
    """The active session, or a new one on ``master`` / ``SPARK_REMOTE``; True if new."""
    require("pyspark", "spark", "--runner spark")
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        for key, value in SESSION_CONF.items():
            active.conf.set(key, value)
        return active, False
    builder = SparkSession.builder.appName(app_name)
    remote = os.environ.get("SPARK_REMOTE")
    if remote:
        builder = builder.remote(remote)
    else:
        master = master or "local[*]"
        builder = builder.master(master).config("spark.ui.showConsoleProgress", "false")
        if master.startswith("local"):
            # the Python workers must run this interpreter (its packages), not the system's
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
            builder = builder.config("spark.sql.shuffle.partitions", str(LOCAL_SHUFFLE_PARTITIONS))
    for key, value in SESSION_CONF.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    if not remote:
        session.sparkContext.setLogLevel("ERROR")
    return session, True
