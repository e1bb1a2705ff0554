"""Checkpoints: source positions, operator state and planned epochs, per pipeline.

An operator's state is a snapshot (``operator_state``) plus, for models that checkpoint
incrementally, the deltas committed since it (``operator_state_delta``, replayed in epoch
order). A delta leaves the snapshot's row untouched (rewriting a large row would cost as
much as the snapshot): the epoch a state reflects is the newest of its rows' epochs.

On SQLite the store writes through one long-lived connection (statements stay prepared,
no connection set-up per epoch). ``plan`` commits with ``synchronous=FULL``: the WAL is
synced, so a planned epoch survives a power loss before any sink holds it. ``commit``
uses ``synchronous=NORMAL`` (no sync of its own): it survives any crash of the process
(SIGKILL: the WAL is in the operating system's cache), and after a power loss the last
epochs' commits may be lost but their plans are not, so the runner replays them exactly
and the sinks skip what they hold. A commit carrying extra rows (an actions outbox) is
synced, since its actions may be sent as soon as it returns.

``commit`` may also plan the next epoch in the same transaction (``plan=``), synced as a
plan is: the local runner commits epoch N and plans N+1 together when N+1 is ready, one
transaction and one sync per epoch instead of two. Atomically both or neither: a crash
before leaves N planned (replayed, its sinks skip it), after leaves N+1 planned.
The ``synchronous`` pragma is sent only when it changes.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Engine,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    create_engine,
    delete,
    event,
    insert,
    literal,
    select,
    union_all,
    update,
)
from sqlalchemy.pool import StaticPool

from sluice.core.errors import StateError
from sluice.core.metrics import CHECKPOINT_SECONDS, pipeline_label
from sluice.storage.db import METADATA, ensure_tables, sqlite_pragmas

checkpoints = Table(
    "checkpoints",
    METADATA,
    Column("pipeline", String(200), primary_key=True),
    Column("epoch", Integer, nullable=False),
    Column("position", Text, nullable=False),
    Column("planned_epoch", Integer),
    Column("planned_position", Text),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("owner", String(100)),
)
operator_state = Table(
    "operator_state",
    METADATA,
    Column("pipeline", String(200), primary_key=True),
    Column("operator", String(200), primary_key=True),
    Column("epoch", Integer, nullable=False),
    Column("data", LargeBinary, nullable=False),
)
operator_state_delta = Table(
    "operator_state_delta",
    METADATA,
    Column("pipeline", String(200), primary_key=True),
    Column("operator", String(200), primary_key=True),
    Column("epoch", Integer, primary_key=True),
    Column("data", LargeBinary, nullable=False),
)

Writer = Callable[[Connection], None]


@dataclass(frozen=True)
class StateDelta:
    """An operator's change in one epoch: appended to its delta log, the snapshot stays."""

    data: bytes


State = bytes | StateDelta | None


@dataclass
class Checkpoint:
    """The last committed epoch of a pipeline and, if any, the epoch planned after it."""

    epoch: int = 0
    position: dict[str, Any] | None = None
    states: dict[str, bytes] = field(default_factory=dict)
    deltas: dict[str, list[bytes]] = field(default_factory=dict)  # per operator, in order
    planned_epoch: int | None = None
    planned_position: dict[str, Any] | None = None
    updated_at: datetime | None = None


@dataclass
class StreamCommit:
    """One stream's part of a checkpoint commit."""

    stream: str
    epoch: int
    position: dict[str, Any]
    states: dict[str, State]


class FencedError(StateError):
    """Another replica owns the partition task now; this one must drop it."""

    def __init__(self, stream: str) -> None:
        super().__init__(f"{stream} is owned by another replica now")
        self.stream = stream


def _owned_by(owner: str | None) -> list[Any]:
    return [] if owner is None else [checkpoints.c.owner == owner]


def _commit_stream(
    conn: Connection,
    item: StreamCommit,
    now: datetime,
    owner: str | None = None,
    plan: tuple[int, dict[str, Any]] | None = None,
) -> None:
    values = {
        "epoch": item.epoch,
        "position": json.dumps(item.position),
        "planned_epoch": plan[0] if plan is not None else None,
        "planned_position": json.dumps(plan[1]) if plan is not None else None,
        "updated_at": now,
    }
    if not conn.execute(
        update(checkpoints)
        .where(checkpoints.c.pipeline == item.stream, *_owned_by(owner))
        .values(**values)
    ).rowcount:
        if owner is not None:
            raise FencedError(item.stream)
        conn.execute(insert(checkpoints).values(pipeline=item.stream, **values))
    for name, blob in item.states.items():
        mine = (operator_state.c.pipeline == item.stream) & (operator_state.c.operator == name)
        if isinstance(blob, StateDelta):
            conn.execute(
                insert(operator_state_delta).values(
                    pipeline=item.stream, operator=name, epoch=item.epoch, data=blob.data
                )
            )
            continue
        conn.execute(delete(operator_state).where(mine))
        if logs_deltas(name):
            conn.execute(
                delete(operator_state_delta).where(
                    (operator_state_delta.c.pipeline == item.stream)
                    & (operator_state_delta.c.operator == name)
                )
            )
        if blob is not None:
            conn.execute(
                insert(operator_state).values(
                    pipeline=item.stream, operator=name, epoch=item.epoch, data=blob
                )
            )


def logs_deltas(operator: str) -> bool:
    """True for the operators that may checkpoint deltas (models)."""
    return operator.startswith("model:")


def read_deltas(conn: Connection, stream: str) -> dict[str, list[bytes]]:
    """The delta logs of ``stream``'s operators, each in epoch order."""
    query = select(operator_state_delta).where(operator_state_delta.c.pipeline == stream)
    out: dict[str, list[bytes]] = {}
    for row in conn.execute(query.order_by(operator_state_delta.c.epoch)):
        out.setdefault(row.operator, []).append(bytes(row.data))
    return out


def read_operator_states(
    conn: Connection, streams: list[str], operator: str
) -> dict[str, tuple[bytes, list[bytes]]]:
    """Snapshot and deltas of ``operator`` in each of ``streams`` (that has a snapshot).

    One statement reads both, so a snapshot committed meanwhile (which deletes the deltas
    before it) cannot pair an old snapshot with newer deltas.
    """
    snap, log = operator_state, operator_state_delta
    query = union_all(
        select(snap.c.pipeline, literal(-1).label("epoch"), snap.c.data).where(
            snap.c.pipeline.in_(streams), snap.c.operator == operator
        ),
        select(log.c.pipeline, log.c.epoch, log.c.data).where(
            log.c.pipeline.in_(streams), log.c.operator == operator
        ),
    ).order_by("pipeline", "epoch")
    out: dict[str, tuple[bytes, list[bytes]]] = {}
    for row in conn.execute(query):
        if row.epoch == -1:
            out[row.pipeline] = (bytes(row.data), [])
        elif row.pipeline in out:
            out[row.pipeline][1].append(bytes(row.data))
    return out


def _writer_engine(engine: Engine) -> Engine:
    """An engine holding one connection for the checkpoint writes (SQLite), else ``engine``."""
    if engine.dialect.name != "sqlite":
        return engine  # a pooled server database keeps its connections already
    writer = create_engine(
        engine.url, poolclass=StaticPool, connect_args={"check_same_thread": False}
    )
    event.listen(writer, "connect", sqlite_pragmas)
    return writer


class CheckpointStore:
    """Reads and commits checkpoints atomically in the metadata database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        ensure_tables(engine, "checkpoints", "operator_state", "operator_state_delta")
        self._writer: Engine | None = None
        self._lock = threading.Lock()
        self._synchronous: str | None = None  # the pragma last set on the write connection

    @contextmanager
    def _begin(self, *, sync: bool) -> Iterator[Connection]:
        """A write transaction on the long-lived connection; ``sync``: synced when it commits."""
        with self._lock:
            if self._writer is None:
                self._writer = _writer_engine(self.engine)
                self._synchronous = None
            with self._writer.begin() as conn:
                mode = "FULL" if sync else "NORMAL"
                # before the first write opens the transaction; the one connection keeps it
                if conn.dialect.name == "sqlite" and mode != self._synchronous:
                    self._synchronous = None  # unknown until the pragma succeeded
                    conn.exec_driver_sql(f"PRAGMA synchronous={mode}")
                    self._synchronous = mode
                yield conn

    def close(self) -> None:
        """Close the long-lived write connection (it reopens when needed)."""
        with self._lock:
            if self._writer is not None and self._writer is not self.engine:
                self._writer.dispose()
            self._writer = None
            self._synchronous = None

    def load(self, pipeline: str) -> Checkpoint:
        """Return the pipeline's checkpoint (epoch 0, no position, when it never ran)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(checkpoints).where(checkpoints.c.pipeline == pipeline)
            ).first()
            if row is None:
                return Checkpoint()
            states = {
                r.operator: bytes(r.data)
                for r in conn.execute(
                    select(operator_state).where(operator_state.c.pipeline == pipeline)
                )
            }
            deltas = read_deltas(conn, pipeline)
        return Checkpoint(
            epoch=row.epoch,
            position=json.loads(row.position),
            states=states,
            deltas=deltas,
            planned_epoch=row.planned_epoch,
            planned_position=json.loads(row.planned_position) if row.planned_position else None,
            updated_at=row.updated_at,
        )

    def plan(self, pipeline: str, epoch: int, position: dict[str, Any]) -> None:
        """Record that ``epoch`` will end at ``position`` before any sink is written."""
        self.plan_many({pipeline: (epoch, position)})

    def plan_many(
        self, plans: dict[str, tuple[int, dict[str, Any]]], owner: str | None = None
    ) -> None:
        """``plan`` for several streams (partition tasks) in one transaction.

        With ``owner``, each stream must still be owned by it (see ``claim``): a replica
        whose partitions moved on is fenced off with ``FencedError`` before it writes.
        """
        now = datetime.now(UTC)
        with self._begin(sync=True) as conn:
            for stream, (epoch, position) in sorted(plans.items()):
                planned = {"planned_epoch": epoch, "planned_position": json.dumps(position)}
                done = conn.execute(
                    update(checkpoints)
                    .where(checkpoints.c.pipeline == stream, *_owned_by(owner))
                    .values(**planned, updated_at=now)
                ).rowcount
                if not done and owner is not None:
                    raise FencedError(stream)
                if not done:
                    conn.execute(
                        insert(checkpoints).values(
                            pipeline=stream, epoch=0, position="null", updated_at=now, **planned
                        )
                    )

    def commit(
        self,
        pipeline: str,
        epoch: int,
        position: dict[str, Any],
        states: dict[str, State],
        writers: list[Writer] | None = None,
        plan: tuple[int, dict[str, Any]] | None = None,
    ) -> None:
        """Commit ``epoch``: position, operator states and extra rows in one transaction;
        ``plan``: the next epoch and its end position, planned in the same transaction."""
        self.commit_many(
            [StreamCommit(pipeline, epoch, position, states)],
            writers,
            plans={pipeline: plan} if plan is not None else None,
        )

    def commit_many(
        self,
        commits: list[StreamCommit],
        writers: list[Writer] | None = None,
        owner: str | None = None,
        plans: dict[str, tuple[int, dict[str, Any]]] | None = None,
    ) -> None:
        """``commit`` for several streams in one transaction (fenced like ``plan_many``);
        ``plans``: per stream, the next epoch planned in the same (synced) transaction."""
        now = datetime.now(UTC)
        started = time.perf_counter()
        plans = plans or {}
        with self._begin(sync=bool(writers) or bool(plans)) as conn:
            for item in commits:
                _commit_stream(conn, item, now, owner, plans.get(item.stream))
            for write in writers or []:
                write(conn)
        if commits:
            CHECKPOINT_SECONDS.labels(pipeline_label(commits[0].stream)).observe(
                time.perf_counter() - started
            )

    def claim(self, stream: str, owner: str) -> Checkpoint:
        """Make ``owner`` the holder of ``stream`` and load its checkpoint, atomically.

        A previous holder's later ``plan_many``/``commit_many`` then fail (fencing); an
        epoch it planned before the claim is in the returned checkpoint, to be replayed.
        """
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            claimed = conn.execute(
                update(checkpoints).where(checkpoints.c.pipeline == stream).values(owner=owner)
            ).rowcount
            if not claimed:
                conn.execute(
                    insert(checkpoints).values(
                        pipeline=stream, epoch=0, position="null", updated_at=now, owner=owner
                    )
                )
        return self.load(stream)

    def reset(self, pipeline: str) -> None:
        """Forget a pipeline's checkpoint and state, its partition tasks' too."""
        tasks = pipeline.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "#%"
        with self.engine.begin() as conn:
            for table in (checkpoints, operator_state, operator_state_delta):
                conn.execute(
                    delete(table).where(
                        (table.c.pipeline == pipeline) | table.c.pipeline.like(tasks, escape="\\")
                    )
                )

    def tasks(self, pipeline: str) -> list[dict[str, Any]]:
        """The partition tasks' checkpoints of ``pipeline`` (stream, epoch, position, time)."""
        prefix = pipeline + "#"
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(
                    checkpoints.c.pipeline,
                    checkpoints.c.epoch,
                    checkpoints.c.position,
                    checkpoints.c.updated_at,
                ).where(checkpoints.c.pipeline > prefix, checkpoints.c.pipeline < pipeline + "$")
            ).all()
        return [
            {
                "task": r.pipeline.removeprefix(prefix),
                "epoch": r.epoch,
                "position": json.loads(r.position),
                "updated_at": r.updated_at,
            }
            for r in rows
            if r.pipeline.startswith(prefix)
        ]

    def all(self) -> list[dict[str, Any]]:
        """Every pipeline's last checkpoint (for status pages).

        A partitioned pipeline's tasks fold into one entry: ``epoch`` is the sum of their
        epochs, ``updated_at`` the latest, ``partitions`` how many there are.
        """
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(checkpoints.c.pipeline, checkpoints.c.epoch, checkpoints.c.updated_at)
            ).all()
        folded: dict[str, dict[str, Any]] = {}
        for row in rows:
            name, _, task = row.pipeline.partition("#")
            entry = folded.setdefault(
                name, {"pipeline": name, "epoch": 0, "updated_at": None, "partitions": 0}
            )
            entry["epoch"] += row.epoch
            entry["partitions"] += 1 if task else 0
            if entry["updated_at"] is None or row.updated_at > entry["updated_at"]:
                entry["updated_at"] = row.updated_at
        return sorted(folded.values(), key=lambda e: e["pipeline"])
