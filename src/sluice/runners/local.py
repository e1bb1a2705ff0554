"""The local runner: the micro-batch loop with checkpoints and idempotent sinks.

One epoch = poll → decode → transforms → models → actions → sinks → checkpoint.
Before any sink is written the epoch's end position is *planned* in the metadata DB;
after every sink holds the epoch, the checkpoint commits the position, all operator and
model state, and the actions outbox in one transaction. After a crash the planned epoch
is re-read exactly (``poll(until=...)``) and re-written; sinks skip what they hold.

Epochs overlap: when the next batch has already been read, it is decoded, transformed
and scored while the sinks write the previous epoch (whose state was taken before). It is
planned only once the previous epoch is committed and before any sink sees it, so the
checkpoint protocol is unchanged; when no batch is ready the epoch commits at once and
the latency bound holds. A source that allows reading ahead has its next batch decoded in
a pool thread while the batch after it is read in another and the current one is
transformed (decoding is stateless; its rejects join the epoch's dead letters when the
epoch runs).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa

from sluice.config.models import Pipeline, SinkConfig
from sluice.core.batch import concat, drop_internal
from sluice.core.context import EpochContext
from sluice.core.errors import SluiceError, TransientError
from sluice.core.settings import Settings
from sluice.core.threads import background_priority
from sluice.core.types import parse_duration
from sluice.runners.stages import Decoded, Stages
from sluice.runners.stats import RunStats
from sluice.sinks.base import Marks, Sink, SinkContext, create_sink
from sluice.sources.base import Position, Source, SourceBatch, SourceContext, create_source
from sluice.storage.checkpoints import CheckpointStore, State, Writer
from sluice.storage.db import get_engine
from sluice.storage.runs import RunHistory

if TYPE_CHECKING:  # the actions layer is imported only by pipelines with actions
    from sluice.actions.base import JobRunner

log = logging.getLogger("sluice.runner")
ProgressCallback = Callable[[RunStats], None]


@dataclass
class Scored:
    """An epoch's batch after the stages, before its sinks are written."""

    batch: SourceBatch
    epoch: int
    ctx: EpochContext
    table: pa.Table
    writers: list[Writer]
    started: float


@dataclass
class InFlight:
    """An epoch whose sinks are being written: committed by ``LocalRunner._complete``."""

    scored: Scored
    writes: list[Future[None]]
    states: dict[str, State]
    # its action rules, run in a pool thread: outbox writers and the rules' state after them
    acting: Future[tuple[list[Writer], State]] | None = None


class LocalRunner:
    """Runs one pipeline in this process until idle, stopped, or forever."""

    def __init__(
        self,
        pipeline: Pipeline,
        settings: Settings | None = None,
        *,
        until_idle: bool = False,
        group: str | None = None,
        idle_timeout: float = 10.0,
        on_progress: ProgressCallback | None = None,
        stop_event: threading.Event | None = None,
        job_runner: JobRunner | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.job_runner = job_runner
        self.settings = (settings or Settings()).ensure()
        self.until_idle = until_idle
        self.on_progress = on_progress
        self.stop_event = stop_event or threading.Event()
        self.stats = RunStats(pipeline=pipeline.name)
        engine = get_engine(str(self.settings.metadata_url))
        self.checkpoints = CheckpointStore(engine)
        self.history = RunHistory(engine)
        self.source: Source = create_source(
            pipeline.source,
            SourceContext(
                pipeline=pipeline.name,
                home=str(self.settings.home),
                group=group,
                idle_timeout=idle_timeout,
            ),
        )
        self.stages = self._create_stages()
        sink_ctx = SinkContext(pipeline.name, self.settings, pipeline.event_time)
        self.sinks: list[Sink] = [create_sink(cfg, sink_ctx) for cfg in pipeline.sinks]
        self._side_ctx = SinkContext(pipeline.name, self.settings, None)
        self._side_sinks: dict[str, Sink] = {}
        self.epoch = 0
        self.position: Position | None = None
        self._pool = ThreadPoolExecutor(max_workers=5, thread_name_prefix=f"sluice-{pipeline.name}")
        # an epoch's action rules: one epoch at a time, at a lower priority than the scoring
        self._rules_pool = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix=f"sluice-{pipeline.name}-rules",
            initializer=background_priority,
        )
        self._pending_read: Future[tuple[SourceBatch | None, Decoded | None]] | None = None
        self._raw_read: Future[SourceBatch | None] | None = None  # the batch after, being read
        self._prefetch = self.source.prefetch_safe
        self._max_rows = pipeline.batch.max_rows
        self._max_latency = parse_duration(pipeline.batch.max_latency).total_seconds()
        self._inflight: InFlight | None = None

    def _create_stages(self) -> Stages:
        return Stages(self.pipeline, self.settings, job_runner=self.job_runner)

    # -- lifecycle -------------------------------------------------------------------
    def run(self, max_epochs: int | None = None) -> RunStats:
        """Run until idle (``until_idle``), ``stop()``, or ``max_epochs`` epochs."""
        run_id = self.history.start(self.pipeline.name)
        status, error = "failed", None
        try:
            self._recover()
            done = 0
            while not self.stop_event.is_set() and (max_epochs is None or done < max_epochs):
                if not self._step(last=max_epochs is not None and done + 1 >= max_epochs):
                    break
                done += 1
            self._complete()
            status = "stopped" if self.stop_event.is_set() else "succeeded"
        except SluiceError as exc:
            error = str(exc)
            raise
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self.stats.finish()
            self.history.finish(run_id, status, self.stats.as_dict(), error)
            self.close()
        return self.stats

    def stop(self) -> None:
        """Ask the loop to finish the current epoch, checkpoint and return."""
        self.stop_event.set()

    def close(self) -> None:
        """Release the source, sinks and stage resources."""
        if self._pending_read is not None:
            self._pending_read.cancel()
            wait([self._pending_read])
        if self._raw_read is not None:  # set by the pending read (finished or cancelled now)
            self._raw_read.cancel()
            wait([self._raw_read])
        self._pool.shutdown(wait=True)
        self._rules_pool.shutdown(wait=True)
        for closer in [
            self.source.close,
            *(s.close for s in self.sinks),
            *(s.close for s in self._side_sinks.values()),
            *self._stage_closers(),
            self.checkpoints.close,
        ]:
            try:
                closer()
            except Exception:
                log.exception("error while closing")

    def _stage_closers(self) -> list[Callable[[], None]]:
        return [self.stages.close]

    # -- the loop ------------------------------------------------------------------------
    def _recover(self) -> None:
        ckpt = self.checkpoints.load(self.pipeline.name)
        self.epoch, self.position = ckpt.epoch, ckpt.position
        self.stages.start()
        self.stages.restore(ckpt.states, ckpt.deltas)
        self.source.open(ckpt.position)
        if ckpt.planned_epoch is not None and ckpt.planned_position is not None:
            log.info("replaying epoch %s of %s", ckpt.planned_epoch, self.pipeline.name)
            batch = self._read(until=ckpt.planned_position)
            assert batch is not None  # a replay always returns a batch
            self._process(batch, ckpt.planned_epoch, final=False)

    def _step(self, last: bool = False) -> bool:
        if not self._next_ready():
            self._complete()  # nothing to overlap with: commit now (the latency bound)
        batch, decoded = self._next_batch()
        if batch is None:
            self._complete()
            if self.until_idle and self.source.exhausted:
                self._finish()
                return False
            if self.source.exhausted:  # a finished bounded source in a streaming run
                self.stop_event.wait(min(self._max_latency, 1.0))
            return True
        epoch = self.epoch + 1 + (self._inflight is not None)
        scored = self._score(batch, epoch, final=False, decoded=decoded)  # while the last writes
        if not self._complete(plan=(epoch, batch.position)):  # commit the last, plan this one
            self.checkpoints.plan(self.pipeline.name, epoch, batch.position)
        self._start(scored)
        if last or self.stop_event.is_set():
            self._complete()
        return True

    def _next_ready(self) -> bool:
        """True when the next batch was read already (prefetch)."""
        return self._pending_read is not None and self._pending_read.done()

    def _finish(self) -> None:
        """End of a bounded input: flush open windows as one last epoch."""
        self._complete()
        if not self.stages.holds_state():
            return
        empty = SourceBatch(pa.table({}), "arrow", self.position or {})
        self.checkpoints.plan(self.pipeline.name, self.epoch + 1, empty.position)
        self._process(empty, self.epoch + 1, final=True)

    def _next_batch(self) -> tuple[SourceBatch | None, Decoded | None]:
        """The next batch; sources that allow it read and decode the following one meanwhile."""
        if not self._prefetch:
            return self._read(), None
        pending = self._pending_read or self._pool.submit(self._read_ahead)
        batch, decoded = pending.result()
        self._pending_read = self._pool.submit(self._read_ahead) if batch is not None else None
        return batch, decoded

    def _read_ahead(self) -> tuple[SourceBatch | None, Decoded | None]:
        """The next batch, decoded (in a pool thread); the batch after it is read meanwhile.

        Reads stay sequential (the following read starts once this batch is read) and so do
        decodes (this task runs once the previous one is taken), but a read and a decode
        overlap: two stages of a pipeline instead of one thread doing both in turn.
        """
        raw, self._raw_read = self._raw_read, None
        batch = raw.result() if raw is not None else self._read()
        if batch is None:
            return None, None
        self._raw_read = self._pool.submit(self._read)
        return batch, self.stages.decode_ahead(batch)

    def _read(self, until: Position | None = None) -> SourceBatch | None:
        """Poll until ``max_rows`` rows, ``max_latency`` elapsed, or (replay) ``until``."""
        deadline = time.monotonic() + self._max_latency
        parts: list[SourceBatch] = []
        rows = 0
        while rows < self._max_rows:
            remaining = max(0.0, deadline - time.monotonic())
            if until is not None and (
                (parts and parts[-1].position == until) or (not parts and self.position == until)
            ):
                break
            part = self.source.poll(self._max_rows - rows, remaining, until=until)
            if part is None:
                if until is not None and not parts and not self.stop_event.is_set():
                    self.stop_event.wait(0.05)
                    continue
                break
            parts.append(part)
            rows += part.data.num_rows
            if until is not None and part.position == until:
                break
            if time.monotonic() >= deadline and until is None:
                break
        if not parts:
            if until is not None:
                return SourceBatch(pa.table({}), "arrow", until)
            return None
        tables = [p.data for p in parts]
        return SourceBatch(concat(tables), parts[-1].raw_format, parts[-1].position)

    def _process(self, batch: SourceBatch, epoch: int, *, final: bool) -> None:
        """Run one planned epoch to its commit."""
        self._start(self._score(batch, epoch, final=final))
        self._complete()

    def _score(
        self, batch: SourceBatch, epoch: int, *, final: bool, decoded: Decoded | None = None
    ) -> Scored:
        ctx = EpochContext(self.pipeline.name, epoch, final=final)
        started = time.perf_counter()
        table, _ = self.stages.run(batch, ctx, decoded, act=False)  # rules: in _start
        return Scored(batch, epoch, ctx, table, [], started)

    def _start(self, scored: Scored) -> None:
        """Start the (planned) epoch's sink writes and action rules in pool threads (both
        overlap the next epoch's scoring) and take its state meanwhile."""
        writes = self._start_sink_writes(drop_internal(scored.table), scored.ctx, scored.epoch)
        scored.writers = self.stages.commit_writers(None, scored.epoch)
        states = self.stages.states(actions=False)
        acting = None
        if self.stages.actions is not None:  # the rules run one epoch at a time, in order:
            acting = self._rules_pool.submit(self._act, scored)  # the next: after this commit
        self._inflight = InFlight(scored, writes, states, acting)

    def _act(self, scored: Scored) -> tuple[list[Writer], State]:
        """Run the epoch's action rules: its outbox writers and the rules' state after it."""
        pending = self.stages.act(scored.table, scored.ctx)
        assert self.stages.actions is not None
        return self.stages.action_writers(pending, scored.epoch), self.stages.actions.state()

    def _complete(self, plan: tuple[int, Position] | None = None) -> bool:
        """Wait for the epoch in flight (if any) to be written, then commit it; with
        ``plan``, the next epoch is planned in the same transaction. False: none in flight
        (nothing committed nor planned)."""
        inflight, self._inflight = self._inflight, None
        if inflight is None:
            return False
        scored = inflight.scored
        wait_for(inflight.writes)
        writers, states = scored.writers, inflight.states
        if inflight.acting is not None:
            outbox, rules = inflight.acting.result()
            writers, states = [*writers, *outbox], {**states, "actions": rules}
        position = scored.batch.position
        self.checkpoints.commit(self.pipeline.name, scored.epoch, position, states, writers, plan)
        self.source.commit(position)
        self.stages.after_commit()
        self.epoch, self.position = scored.epoch, position
        self.stats.add_epoch(
            scored.batch.data.num_rows,
            scored.table.num_rows,
            scored.ctx.counters,
            time.perf_counter() - scored.started,
        )
        if self.on_progress:
            self.on_progress(self.stats)
        return True

    # -- sinks ---------------------------------------------------------------------------
    def _side_sink(self, table_name: str) -> Sink:
        sink = self._side_sinks.get(table_name)
        if sink is None:
            sink = create_sink(SinkConfig(type="lake", table=table_name), self._side_ctx)
            self._side_sinks[table_name] = sink
        return sink

    def _start_sink_writes(
        self, table: pa.Table, ctx: EpochContext, epoch: int | Marks
    ) -> list[Future[None]]:
        """Write the epoch's output, side outputs and dead letters in parallel threads."""
        writes: list[tuple[Sink, pa.Table]] = [(sink, table) for sink in self.sinks]
        for name, parts in sorted(ctx.side_outputs.items()):
            writes.append((self._side_sink(name), drop_internal(concat(parts))))
        if ctx.dead_letters:
            writes.append(
                (self._side_sink(self.pipeline.dead_letter.table), concat(ctx.dead_letters))
            )
        return [
            self._pool.submit(self._write_with_retry, sink, data, epoch) for sink, data in writes
        ]

    def _write_with_retry(self, sink: Sink, data: pa.Table, epoch: int | Marks) -> None:
        delay = 0.5
        while True:
            try:
                sink.write(data, epoch)
                return
            except TransientError as exc:
                self.stats.sink_retries += 1
                log.warning("sink %s unavailable (%s); retrying in %.1fs", sink.sink_id, exc, delay)
                if self.stop_event.wait(delay):
                    raise
                delay = min(delay * 2, 30.0)


def wait_for(writes: list[Future[None]]) -> None:
    """Wait for every sink write; the first failure is raised."""
    for future in writes:
        future.result()
