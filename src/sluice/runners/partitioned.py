"""The partitioned runner: one task per source partition, as Kafka Streams runs them.

Every partition a replica holds is a *task* with its own stages (windows, dedupe, model and
action state), its own epoch counter and its own checkpoint row, stored under the stream
name ``pipeline#topic/partition``. State therefore follows the partition: when the group
moves a partition to another replica, that replica loads the partition's checkpoint (start
offset and state) as it is assigned, and carries on where the previous owner committed.

One step reads a batch, cuts it per partition, plans each task's next epoch, runs each
task's stages on its slice, writes the sinks once with one idempotency mark per task
(``{stream: epoch}``), then commits every task's checkpoint in one transaction. A task whose
planned epoch was not committed (its owner crashed) is *replayed* first: its records from
the planned start offset up to the planned end offset are processed again as the same
epoch, so sinks that already hold it skip it and nothing is duplicated or lost, whichever
replica does the replay. Watermarks are per task too (stream time per partition), so
window results do not depend on how partitions are spread over replicas.

Records of a partition revoked while a batch was being read are dropped from it: their
offsets were not committed, and the new owner reads them again.

Fencing: a replica *claims* each task as it is assigned (``CheckpointStore.claim`` writes
its owner id and loads the checkpoint in one step); plans and commits only succeed for
the current owner. A replica that stalled past the session timeout and wakes up after its
partitions moved is therefore refused before it writes anything new; an epoch it had
planned before the claim is replayed by the new owner with the same idempotency marks.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from sluice.core.batch import concat, drop_internal
from sluice.core.context import EpochContext
from sluice.core.errors import ConfigError
from sluice.runners.keying import check_keying
from sluice.runners.local import LocalRunner, wait_for
from sluice.runners.stages import Stages
from sluice.sources.base import PartitionedSource, Position, SourceBatch
from sluice.sources.repartition import OriginFilter
from sluice.storage.checkpoints import FencedError, State, StreamCommit, Writer

log = logging.getLogger("sluice.runner")
ORIGINS_STATE = "source:origins"


def task_stream(pipeline: str, key: str) -> str:
    """The checkpoint and idempotency stream of partition ``key`` of ``pipeline``."""
    return f"{pipeline}#{key}"


@dataclass
class Replay:
    """A planned but uncommitted epoch of a task, read again before anything new."""

    epoch: int
    start: int
    end: int
    final: bool = False
    parts: list[pa.Table] = field(default_factory=list)


@dataclass
class Task:
    """One partition's stages, committed epoch and (after a crash) the epoch to replay."""

    key: str
    stream: str
    stages: Stages
    epoch: int
    replay: Replay | None = None
    origins: OriginFilter = field(default_factory=OriginFilter)

    def states(self) -> dict[str, State]:
        """The stages' states and the repartition high marks."""
        states = self.stages.states()
        if self.origins.high:
            states[ORIGINS_STATE] = self.origins.state()
        return states


@dataclass
class TaskEpoch:
    """One task's input for one epoch."""

    task: Task
    epoch: int
    batch: SourceBatch
    start: int | None = None


class PartitionedRunner(LocalRunner):
    """Runs a partitioned source (Kafka) as one task per partition held by this replica."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.tasks: dict[str, Task] = {}
        self._dropped: set[str] = set()
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        super().__init__(*args, **kwargs)

    @property
    def partitioned_source(self) -> PartitionedSource:
        """The source, with the partition hooks this runner calls."""
        if not isinstance(self.source, PartitionedSource):
            raise ConfigError(f"source {self.pipeline.source.type!r} is not partitioned")
        return self.source

    def _create_stages(self) -> Any:
        return None  # each task builds its own

    def _stage_closers(self) -> list[Callable[[], None]]:
        return [task.stages.close for task in self.tasks.values()]

    # -- partitions arriving and leaving --------------------------------------------
    def _recover(self) -> None:
        source = self.partitioned_source
        source.set_offset_lookup(self._adopt)
        source.set_rebalance_listener(self._release, lambda keys: None)
        source.name_origins_by_offset()
        partitioning = source.partitioning()
        if partitioning is not None:
            check_keying(self.pipeline, partitioning)
        source.open(None)

    def _adopt(self, keys: list[str]) -> dict[str, int]:
        """Load the checkpoints of partitions just assigned; return their start offsets."""
        starts: dict[str, int] = {}
        for key in keys:
            stream = task_stream(self.pipeline.name, key)
            ckpt = self.checkpoints.claim(stream, self.owner)
            old = self.tasks.pop(key, None)
            if old is not None:
                old.stages.close()
            stages = Stages(
                self.pipeline.model_copy(update={"name": stream}),
                self.settings,
                job_runner=self.job_runner,
            )
            stages.start()
            stages.restore(ckpt.states, ckpt.deltas)
            task = Task(key, stream, stages, ckpt.epoch)
            if ORIGINS_STATE in ckpt.states:
                task.origins.restore(ckpt.states[ORIGINS_STATE])
            committed = (ckpt.position or {}).get("offsets", {}).get(key)
            if committed is not None:
                starts[key] = int(committed)
            planned = ckpt.planned_position
            if ckpt.planned_epoch is not None and planned:
                task.replay = Replay(
                    ckpt.planned_epoch,
                    int(planned["from"]),
                    int(planned["offsets"][key]),
                    final=bool(planned.get("final")),
                )
                starts[key] = task.replay.start
                log.info(
                    "%s: replaying epoch %s of %s", self.pipeline.name, ckpt.planned_epoch, key
                )
            self.tasks[key] = task
        return starts

    def _release(self, keys: list[str]) -> None:
        """Partitions revoked: drop their tasks (uncommitted records are read again)."""
        for key in keys:
            task = self.tasks.pop(key, None)
            if task is not None:
                task.stages.close()
            self._dropped.add(key)

    # -- the loop ----------------------------------------------------------------------
    def _step(self, last: bool = False) -> bool:
        self._replay_final_flushes()
        batch = self._read()
        if batch is None:
            if self.until_idle and self.source.exhausted:
                self._finish()
                return False
            return True
        replays, fresh = self._sort_slices(batch)
        for item in replays:
            self._process_tasks([item], final=False)
        fresh = self._plan(fresh)
        if fresh:
            self._process_tasks(fresh, final=False)
        return True

    def _plan(self, items: list[TaskEpoch], final: bool = False) -> list[TaskEpoch]:
        """Plan the tasks' next epochs; tasks another replica has claimed are dropped."""
        while items:
            extra = {"final": True} if final else {}
            try:
                self.checkpoints.plan_many(
                    {i.task.stream: (i.epoch, {**_planned(i), **extra}) for i in items},
                    owner=self.owner,
                )
                return items
            except FencedError as exc:
                items = self._fence(exc.stream, items)
        return items

    def _fence(self, stream: str, items: list[TaskEpoch]) -> list[TaskEpoch]:
        """``stream`` belongs to another replica now: drop its task and its items."""
        log.warning("%s moved to another replica; dropping it here", stream)
        self._release([stream.split("#", 1)[1]])
        return [i for i in items if i.task.stream != stream]

    def _read(self, until: Position | None = None) -> SourceBatch | None:
        """Poll until ``max_rows`` rows or ``max_latency``; drop revoked partitions' rows."""
        deadline = time.monotonic() + self._max_latency
        parts: list[SourceBatch] = []
        rows = 0
        while rows < self._max_rows:
            part = self.source.poll(self._max_rows - rows, max(0.0, deadline - time.monotonic()))
            if self._dropped:
                parts = [_without(p, self._dropped) for p in parts]
                rows = sum(p.data.num_rows for p in parts)
                self._dropped.clear()
            if part is None:
                break
            parts.append(part)
            rows += part.data.num_rows
            if time.monotonic() >= deadline:
                break
        parts = [p for p in parts if p.data.num_rows]
        if not parts:
            return None
        return SourceBatch(
            concat([p.data for p in parts]), parts[-1].raw_format, parts[-1].position
        )

    def _sort_slices(self, batch: SourceBatch) -> tuple[list[TaskEpoch], list[TaskEpoch]]:
        """Cut ``batch`` per task: completed replays first, then fresh epochs."""
        replays: list[TaskEpoch] = []
        fresh: list[TaskEpoch] = []
        source = self.partitioned_source
        for key, (part, offsets) in sorted(source.split(batch).items()):
            task = self.tasks.get(key)
            if task is None:
                continue  # revoked meanwhile
            replay = task.replay
            if replay is not None:
                before = pc.less(offsets, replay.end)
                replay.parts.append(part.data.filter(before))
                if part.position["offsets"][key] < replay.end:
                    continue  # the planned range is not read completely yet
                replays.append(
                    TaskEpoch(
                        task,
                        replay.epoch,
                        SourceBatch(
                            concat(replay.parts), part.raw_format, {"offsets": {key: replay.end}}
                        ),
                    )
                )
                task.replay = None
                keep = pc.invert(before)
                part = SourceBatch(part.data.filter(keep), part.raw_format, part.position)
                offsets = offsets.filter(keep)
                if part.data.num_rows == 0:
                    continue
            fresh.append(TaskEpoch(task, task.epoch + 1, part, int(offsets[0].as_py())))
        return replays, fresh

    def _replay_final_flushes(self) -> None:
        """Replay planned end-of-input flushes (they have no records to wait for)."""
        for task in list(self.tasks.values()):
            replay = task.replay
            if replay is not None and replay.final and replay.start >= replay.end:
                task.replay = None
                empty = SourceBatch(pa.table({}), "arrow", {"offsets": {task.key: replay.end}})
                self._process_tasks([TaskEpoch(task, replay.epoch, empty)], final=True)

    def _finish(self) -> None:
        """End of input: flush every task's open windows as one last epoch."""
        items = []
        for task in self.tasks.values():
            if task.replay is not None or not task.stages.holds_state():
                continue
            ckpt = self.checkpoints.load(task.stream)
            offset = (ckpt.position or {}).get("offsets", {}).get(task.key)
            if offset is None:
                continue
            empty = SourceBatch(pa.table({}), "arrow", {"offsets": {task.key: int(offset)}})
            items.append(TaskEpoch(task, task.epoch + 1, empty, int(offset)))
        items = self._plan(items, final=True)
        if items:
            self._process_tasks(items, final=True)

    def _process_tasks(self, items: list[TaskEpoch], *, final: bool) -> None:
        """Run each task's stages, write the sinks once, commit all tasks together."""
        started = time.perf_counter()
        merged = EpochContext(self.pipeline.name, self.epoch + 1, final=final)
        outputs: list[pa.Table] = []
        writers: dict[str, list[Writer]] = {}
        rows_in = 0
        for item in items:
            task = item.task
            ctx = EpochContext(
                self.pipeline.name, item.epoch, final=final, origin_prefix=f"{task.key}@"
            )
            data, repeats = task.origins.apply(item.batch.data)
            ctx.counters["filtered"] += repeats
            batch = SourceBatch(data, item.batch.raw_format, item.batch.position)
            table, pending = task.stages.run(batch, ctx)
            if table.num_rows:
                outputs.append(drop_internal(table))
            merged.dead_letters.extend(ctx.dead_letters)
            for name, tables in ctx.side_outputs.items():
                merged.side_outputs.setdefault(name, []).extend(tables)
            merged.counters.update(ctx.counters)
            writers[task.stream] = task.stages.commit_writers(pending, item.epoch)
            rows_in += item.batch.data.num_rows
        output = concat(outputs)
        writes = self._start_sink_writes(output, merged, {i.task.stream: i.epoch for i in items})
        commits = [  # the states are serialised while the sinks write
            StreamCommit(i.task.stream, i.epoch, i.batch.position, i.task.states()) for i in items
        ]
        wait_for(writes)
        items = self._commit(items, commits, writers)
        position = {"offsets": {i.task.key: i.batch.position["offsets"][i.task.key] for i in items}}
        self.source.commit(position)
        for item in items:
            item.task.epoch = item.epoch
            item.task.stages.after_commit()
        self.epoch += 1
        self.position = position
        self.stats.add_epoch(
            rows_in, output.num_rows, merged.counters, time.perf_counter() - started
        )
        if self.on_progress:
            self.on_progress(self.stats)

    def _commit(
        self, items: list[TaskEpoch], commits: list[StreamCommit], writers: dict[str, list[Writer]]
    ) -> list[TaskEpoch]:
        """Commit the tasks' checkpoints together; fenced tasks are dropped, not committed."""
        while commits:
            try:
                self.checkpoints.commit_many(
                    commits, [w for c in commits for w in writers[c.stream]], owner=self.owner
                )
                break
            except FencedError as exc:
                items = self._fence(exc.stream, items)
                commits = [c for c in commits if c.stream != exc.stream]
        return items


def _planned(item: TaskEpoch) -> dict[str, Any]:
    """A task's planned position: where its epoch ends and where it started."""
    return {**item.batch.position, "from": item.start}


def _without(batch: SourceBatch, keys: set[str]) -> SourceBatch:
    """``batch`` without the rows of partitions ``keys``."""
    if "__task" not in batch.data.column_names:
        return batch
    keep = pc.invert(pc.is_in(batch.data.column("__task"), pa.array(sorted(keys))))
    return SourceBatch(batch.data.filter(keep), batch.raw_format, batch.position)
