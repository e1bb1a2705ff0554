"""Run history of pipelines: one row per `sluice run`/serve worker with its counters."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Integer,
    String,
    Table,
    Text,
    insert,
    select,
    update,
)

from sluice.storage.db import METADATA, ensure_tables

pipeline_runs = Table(
    "pipeline_runs",
    METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("pipeline", String(200), nullable=False, index=True),
    Column("status", String(20), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("stats", Text),
    Column("error", Text),
)


class RunHistory:
    """Records pipeline runs and their final counters."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        ensure_tables(engine, "pipeline_runs")

    def start(self, pipeline: str) -> int:
        """Record a run start; return its id."""
        with self.engine.begin() as conn:
            result = conn.execute(
                insert(pipeline_runs).values(
                    pipeline=pipeline, status="running", started_at=datetime.now(UTC)
                )
            )
            return int(result.inserted_primary_key[0])  # type: ignore[index]

    def finish(
        self, run_id: int, status: str, stats: dict[str, Any], error: str | None = None
    ) -> None:
        """Record a run's end, counters and error (if any)."""
        with self.engine.begin() as conn:
            conn.execute(
                update(pipeline_runs)
                .where(pipeline_runs.c.id == run_id)
                .values(
                    status=status,
                    finished_at=datetime.now(UTC),
                    stats=json.dumps(stats),
                    error=error,
                )
            )

    def recent(self, pipeline: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        """The most recent runs, newest first."""
        query = select(pipeline_runs).order_by(pipeline_runs.c.id.desc()).limit(limit)
        if pipeline:
            query = query.where(pipeline_runs.c.pipeline == pipeline)
        with self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(query)]
        for row in rows:
            row["stats"] = json.loads(row["stats"]) if row["stats"] else {}
        return rows

    def totals(self) -> dict[str, dict[str, int]]:
        """Events in and dead-lettered summed over every recorded run, per pipeline.

        Partition tasks (``PIPELINE#TOPIC/PARTITION``) count towards their pipeline.
        """
        query = select(pipeline_runs.c.pipeline, pipeline_runs.c.stats).where(
            pipeline_runs.c.stats.is_not(None)
        )
        out: dict[str, dict[str, int]] = {}
        with self.engine.connect() as conn:
            for name, text in conn.execute(query):
                stats = json.loads(text)
                mine = out.setdefault(str(name).partition("#")[0], {})
                for key in ("events_in", "dead_lettered"):
                    mine[key] = mine.get(key, 0) + int(stats.get(key) or 0)
        return out
