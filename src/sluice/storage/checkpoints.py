"""Checkpoints: source positions, operator state and planned epochs, per pipeline."""

from __future__ import annotations

import json
from collections.abc import Callable
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
    delete,
    insert,
    select,
    update,
)

from sluice.storage.db import METADATA, ensure_tables

checkpoints = Table(
    "checkpoints",
    METADATA,
    Column("pipeline", String(200), primary_key=True),
    Column("epoch", Integer, nullable=False),
    Column("position", Text, nullable=False),
    Column("planned_epoch", Integer),
    Column("planned_position", Text),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
operator_state = Table(
    "operator_state",
    METADATA,
    Column("pipeline", String(200), primary_key=True),
    Column("operator", String(200), primary_key=True),
    Column("epoch", Integer, nullable=False),
    Column("data", LargeBinary, nullable=False),
)

Writer = Callable[[Connection], None]


@dataclass
class Checkpoint:
    """The last committed epoch of a pipeline and, if any, the epoch planned after it."""

    epoch: int = 0
    position: dict[str, Any] | None = None
    states: dict[str, bytes] = field(default_factory=dict)
    planned_epoch: int | None = None
    planned_position: dict[str, Any] | None = None
    updated_at: datetime | None = None


class CheckpointStore:
    """Reads and commits checkpoints atomically in the metadata database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        ensure_tables(engine, "checkpoints", "operator_state")

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
        return Checkpoint(
            epoch=row.epoch,
            position=json.loads(row.position),
            states=states,
            planned_epoch=row.planned_epoch,
            planned_position=json.loads(row.planned_position) if row.planned_position else None,
            updated_at=row.updated_at,
        )

    def plan(self, pipeline: str, epoch: int, position: dict[str, Any]) -> None:
        """Record that ``epoch`` will end at ``position`` before any sink is written."""
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            done = conn.execute(
                update(checkpoints)
                .where(checkpoints.c.pipeline == pipeline)
                .values(planned_epoch=epoch, planned_position=json.dumps(position), updated_at=now)
            ).rowcount
            if not done:
                conn.execute(
                    insert(checkpoints).values(
                        pipeline=pipeline,
                        epoch=0,
                        position="null",
                        planned_epoch=epoch,
                        planned_position=json.dumps(position),
                        updated_at=now,
                    )
                )

    def commit(
        self,
        pipeline: str,
        epoch: int,
        position: dict[str, Any],
        states: dict[str, bytes | None],
        writers: list[Writer] | None = None,
    ) -> None:
        """Commit ``epoch``: position, operator states and extra rows in one transaction."""
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            values = {
                "epoch": epoch,
                "position": json.dumps(position),
                "planned_epoch": None,
                "planned_position": None,
                "updated_at": now,
            }
            if not conn.execute(
                update(checkpoints).where(checkpoints.c.pipeline == pipeline).values(**values)
            ).rowcount:
                conn.execute(insert(checkpoints).values(pipeline=pipeline, **values))
            for name, blob in states.items():
                conn.execute(
                    delete(operator_state).where(
                        (operator_state.c.pipeline == pipeline)
                        & (operator_state.c.operator == name)
                    )
                )
                if blob is not None:
                    conn.execute(
                        insert(operator_state).values(
                            pipeline=pipeline, operator=name, epoch=epoch, data=blob
                        )
                    )
            for write in writers or []:
                write(conn)

    def reset(self, pipeline: str) -> None:
        """Forget a pipeline's checkpoint and state (it starts from the beginning)."""
        with self.engine.begin() as conn:
            conn.execute(delete(checkpoints).where(checkpoints.c.pipeline == pipeline))
            conn.execute(delete(operator_state).where(operator_state.c.pipeline == pipeline))

    def all(self) -> list[dict[str, Any]]:
        """Every pipeline's last checkpoint (for status pages)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(checkpoints.c.pipeline, checkpoints.c.epoch, checkpoints.c.updated_at)
            ).all()
        return [dict(r._mapping) for r in rows]
