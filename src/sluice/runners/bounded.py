"""The driver side of the batch runners (``--runner spark``, ``--runner beam``).

A batch run processes everything a bounded source holds as **one epoch**. The driver reads
the source with Sluice's own source and decoder, in blocks of ``batch.max_rows`` rows (the
local runner's micro-batches, which the window's lateness rules refer to), and tags every
row with its arrival ordinal ``__seq`` and block ``__block``. An engine (Spark, Beam) runs the
transforms and models; the driver then writes the outputs exactly as the local runner does:
every sink, side output (window ``into``) and dead letter with the epoch's marks (Delta app
transactions, the warehouse's epoch table), the actions outbox with the checkpoint.

Before any sink is written the epoch's end position is planned in the metadata DB. A run that
crashed is re-read up to that position and written again as the same epoch, which every sink
skips; a finished run's checkpoint sits at the end of the input, so a rerun reads nothing
and adds nothing.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sluice.actions.base import JobRunner
from sluice.config.models import Pipeline, SinkConfig
from sluice.core.batch import concat, drop_internal
from sluice.core.context import EpochContext
from sluice.core.errors import ConfigError
from sluice.core.settings import Settings
from sluice.runners.stages import Stages
from sluice.runners.stats import RunStats
from sluice.sinks.base import Sink, SinkContext, create_sink
from sluice.sources.base import Position, Source, SourceBatch, SourceContext, create_source
from sluice.storage.checkpoints import CheckpointStore
from sluice.storage.db import get_engine
from sluice.storage.runs import RunHistory

log = logging.getLogger("sluice.runner")
SEQ = "__seq"  # arrival ordinal of a row in the run's input
BLOCK = "__block"  # the micro-batch (of ``batch.max_rows`` rows) a row arrived in


@dataclass
class JobInput:
    """A run's decoded input: the rows (with ``__seq`` and ``__block``) and where it ends."""

    epoch: int
    table: pa.Table
    position: Position
    rows_in: int
    ctx: EpochContext


@dataclass
class JobOutput:
    """What an engine produced: the stream's rows and the side-output tables."""

    table: pa.Table
    side_outputs: dict[str, pa.Table] = field(default_factory=dict)


class BatchRunner(ABC):
    """Runs a pipeline over a bounded input as one epoch on a batch engine."""

    engine = "batch"

    def __init__(
        self,
        pipeline: Pipeline,
        settings: Settings | None = None,
        *,
        idle_timeout: float = 10.0,
        job_runner: JobRunner | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.settings = (settings or Settings()).ensure()
        self.idle_timeout = idle_timeout
        self.stats = RunStats(pipeline=pipeline.name)
        self.stages = Stages(pipeline, self.settings, job_runner=job_runner)
        self.source: Source = create_source(
            pipeline.source,
            SourceContext(
                pipeline=pipeline.name, home=str(self.settings.home), idle_timeout=idle_timeout
            ),
        )
        if self.source.partitioned:
            raise ConfigError(
                f"--runner {self.engine} reads bounded sources (file, generator, ...); "
                f"a {pipeline.source.type!r} source runs with --runner local",
                key="source.type",
            )
        sink_ctx = SinkContext(pipeline.name, self.settings, pipeline.event_time)
        self.sinks: list[Sink] = [create_sink(cfg, sink_ctx) for cfg in pipeline.sinks]
        self._side_ctx = SinkContext(pipeline.name, self.settings, None)

    @abstractmethod
    def prepare(self) -> None:
        """Start the engine and check the whole plan on empty input (errors: ConfigError)."""

    @abstractmethod
    def execute(self, job: JobInput) -> JobOutput:
        """Run the transforms and models over ``job`` on the engine."""

    def close_engine(self) -> None:  # noqa: B027 - nothing to release by default
        """Release what ``prepare`` started."""

    # -- the run ---------------------------------------------------------------------------
    def run(self) -> RunStats:
        """Read the bounded input, run it on the engine and commit it as one epoch."""
        engine = get_engine(str(self.settings.metadata_url))
        checkpoints, history = CheckpointStore(engine), RunHistory(engine)
        run_id = history.start(self.pipeline.name)
        status, error = "failed", None
        try:
            self.stages.start()
            job = self._read(checkpoints)
            if job is not None:
                started = time.perf_counter()
                checkpoints.plan(self.pipeline.name, job.epoch, job.position)
                output = JobOutput(job.table)  # nothing decoded: no engine needed
                if job.table.num_rows:
                    self.prepare()
                    output = self.execute(job)
                self._commit(checkpoints, job, output, time.perf_counter() - started)
            status = "succeeded"
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self.stats.finish()
            history.finish(run_id, status, self.stats.as_dict(), error)
            self.close()
        return self.stats

    def close(self) -> None:
        """Release the source, sinks, stages and the engine."""
        for closer in [
            self.source.close,
            *(s.close for s in self.sinks),
            self.stages.close,
            self.close_engine,
        ]:
            try:
                closer()
            except Exception:
                log.exception("error while closing")

    # -- input -----------------------------------------------------------------------------
    def _read(self, checkpoints: CheckpointStore) -> JobInput | None:
        """Read and decode everything new; None when there is nothing (a finished run)."""
        ckpt = checkpoints.load(self.pipeline.name)
        replay = ckpt.planned_epoch is not None and ckpt.planned_position is not None
        epoch = ckpt.planned_epoch if replay and ckpt.planned_epoch else ckpt.epoch + 1
        until = ckpt.planned_position if replay else None
        self.source.open(ckpt.position)
        ctx = EpochContext(self.pipeline.name, epoch)
        blocks: list[pa.Table] = []
        position, rows_in, seq = ckpt.position, 0, 0
        while True:
            batch = self._read_block(position, until)
            if batch is None:
                break
            position, rows_in = batch.position, rows_in + batch.data.num_rows
            table = self.stages.decode(batch, ctx)
            if table is not None and table.num_rows:
                blocks.append(tag(table, seq, len(blocks)))
                seq += table.num_rows
            if until is not None and position == until:
                break
        if rows_in == 0 and not replay:
            log.info("%s: nothing new to read", self.pipeline.name)
            return None
        table = concat(blocks) if blocks else pa.table({SEQ: pa.array([], pa.int64())})
        return JobInput(epoch, table, position or {}, rows_in, ctx)

    def _read_block(self, position: Position | None, until: Position | None) -> SourceBatch | None:
        """Up to ``batch.max_rows`` rows (fewer at the end of the input); None at the end."""
        max_rows = self.pipeline.batch.max_rows
        parts: list[SourceBatch] = []
        rows, idle_since = 0, time.monotonic()
        while rows < max_rows:
            if until is not None and (parts[-1].position if parts else position) == until:
                break
            part = self.source.poll(max_rows - rows, 1.0, until=until)
            if part is None:
                idle = time.monotonic() - idle_since >= self.idle_timeout
                if self.source.exhausted or idle or until is not None:
                    break
                continue
            idle_since = time.monotonic()
            parts.append(part)
            rows += part.data.num_rows
        if not parts:
            return None
        return SourceBatch(
            concat([p.data for p in parts]), parts[-1].raw_format, parts[-1].position
        )

    # -- output ----------------------------------------------------------------------------
    def _commit(
        self, checkpoints: CheckpointStore, job: JobInput, output: JobOutput, seconds: float
    ) -> None:
        """Write every sink, side output and dead letter as the epoch; then checkpoint."""
        ctx, epoch = job.ctx, job.epoch
        table = output.table
        actions = self.stages.actions
        pending = actions.evaluate(table, ctx) if actions is not None and table.num_rows else None
        writes: list[tuple[Sink, pa.Table]] = [(s, drop_internal(table)) for s in self.sinks]
        for name, rows in sorted(output.side_outputs.items()):
            writes.append((self._side_sink(name), drop_internal(rows)))
        if ctx.dead_letters:
            dead = concat(ctx.dead_letters)
            writes.append((self._side_sink(self.pipeline.dead_letter.table), dead))
        for sink, data in writes:
            sink.write(data, epoch)
        writers = self.stages.commit_writers(pending, epoch)
        # a batch run hands no operator or model state to a later streaming run
        checkpoints.commit(self.pipeline.name, epoch, job.position, {}, writers)
        self.source.commit(job.position)
        self.stages.after_commit()
        self._account(job, table.num_rows)
        self.stats.add_epoch(job.rows_in, table.num_rows, ctx.counters, seconds)

    def _account(self, job: JobInput, rows_out: int) -> None:
        """Count what left the stream: filtered, or aggregated when a window replaces it."""
        decoded = job.table.num_rows
        if any(t.replaces_stream for t in self.stages.transforms):
            job.ctx.counters["aggregated"] += decoded - job.ctx.counters["late"]
        else:
            job.ctx.counters["filtered"] += decoded - rows_out

    def _side_sink(self, table_name: str) -> Sink:
        sink = create_sink(SinkConfig(type="lake", table=table_name), self._side_ctx)
        self.sinks.append(sink)  # closed with the others
        return sink


def check_parts(model_partitions: int) -> int:
    """``model_partitions``, checked to be positive."""
    if model_partitions < 1:
        raise ConfigError(f"--model-partitions must be at least 1, not {model_partitions}")
    return model_partitions


def tag(table: pa.Table, first_seq: int, block: int) -> pa.Table:
    """``table`` with its rows' arrival ordinals (from ``first_seq``) and block number."""
    n = table.num_rows
    seq = pa.array(np.arange(first_seq, first_seq + n, dtype=np.int64))
    return table.append_column(SEQ, seq).append_column(
        BLOCK, pa.repeat(pa.scalar(block, pa.int32()), n)
    )


def in_arrival_order(table: pa.Table) -> pa.Table:
    """``table`` sorted by ``__seq`` (unchanged when it has no such column)."""
    if SEQ not in table.column_names or table.num_rows < 2:
        return table
    return table.take(pc.sort_indices(table, [(SEQ, "ascending")]))


def closed_before(block_max: dict[int, int], lateness_us: int, blocks: int) -> dict[int, int]:
    """For each block, the end of the windows already closed when it arrived (local rules).

    The local runner closes windows up to ``max event time seen - allowed_lateness`` after
    each micro-batch, so block ``b`` meets ``max(block_max[j] for j < b) - lateness``.
    """
    out: dict[int, int] = {}
    running: int | None = None
    for block in range(blocks):
        if running is not None:
            out[block] = running - lateness_us
        if block in block_max:
            running = block_max[block] if running is None else max(running, block_max[block])
    return out
