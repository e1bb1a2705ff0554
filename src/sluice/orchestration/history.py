"""Run history of jobs in the metadata DB: one row per (job, interval), one per task attempt."""

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
    UniqueConstraint,
    and_,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from sluice.core.errors import NotFoundError
from sluice.storage.db import METADATA, ensure_tables

job_runs = Table(
    "job_runs",
    METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job", String(200), nullable=False, index=True),
    Column("kind", String(20), nullable=False),  # scheduled (incl. backfill) or manual
    Column("interval_start", DateTime(timezone=True), nullable=False),
    Column("interval_end", DateTime(timezone=True), nullable=False),
    Column("state", String(20), nullable=False),  # queued running success failed skipped
    Column("lease_owner", String(200)),
    Column("lease_expires", DateTime(timezone=True)),
    Column("attempts", Integer, nullable=False, default=0),
    Column("params", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    UniqueConstraint("job", "kind", "interval_start", name="uq_job_runs_interval"),
)
task_runs = Table(
    "task_runs",
    METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, nullable=False, index=True),
    Column("task", String(200), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("state", String(20), nullable=False),  # running success failed skipped
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("log", Text),
    Column("error", Text),
)
FINAL = ("success", "failed", "skipped")


def _utc(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; every stored time is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


class RunStore:
    """Creates, leases and records job runs and task attempts."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        ensure_tables(engine, "job_runs", "task_runs")

    def create(
        self,
        job: str,
        start: datetime,
        end: datetime,
        now: datetime,
        *,
        kind: str = "scheduled",
        params: dict[str, Any] | None = None,
    ) -> int | None:
        """Queue a run of ``job`` for [start, end); None when that interval already has one."""
        try:
            with self.engine.begin() as conn:
                result = conn.execute(
                    insert(job_runs).values(
                        job=job,
                        kind=kind,
                        interval_start=start,
                        interval_end=end,
                        state="queued",
                        attempts=0,
                        params=json.dumps(params or {}),
                        created_at=now,
                    )
                )
                return int(result.inserted_primary_key[0])  # type: ignore[index]
        except IntegrityError:
            return None

    def claim(self, run_id: int, owner: str, now: datetime, lease_until: datetime) -> bool:
        """Take the lease of a queued run, or of a running one whose lease expired."""
        with self.engine.begin() as conn:
            done = conn.execute(
                update(job_runs)
                .where(
                    and_(
                        job_runs.c.id == run_id,
                        or_(
                            job_runs.c.state == "queued",
                            and_(job_runs.c.state == "running", job_runs.c.lease_expires < now),
                        ),
                    )
                )
                .values(
                    state="running",
                    lease_owner=owner,
                    lease_expires=lease_until,
                    attempts=job_runs.c.attempts + 1,
                    started_at=func.coalesce(job_runs.c.started_at, now),
                )
            ).rowcount
        return bool(done)

    def renew(self, run_id: int, owner: str, lease_until: datetime) -> bool:
        """Extend the lease held by ``owner``; False when it was lost."""
        with self.engine.begin() as conn:
            return bool(
                conn.execute(
                    update(job_runs)
                    .where(
                        and_(
                            job_runs.c.id == run_id,
                            job_runs.c.lease_owner == owner,
                            job_runs.c.state == "running",
                        )
                    )
                    .values(lease_expires=lease_until)
                ).rowcount
            )

    def finish(self, run_id: int, state: str, now: datetime) -> None:
        """Record the run's final state and release its lease."""
        with self.engine.begin() as conn:
            conn.execute(
                update(job_runs)
                .where(job_runs.c.id == run_id)
                .values(state=state, finished_at=now, lease_owner=None, lease_expires=None)
            )

    def claimable(self, now: datetime) -> list[dict[str, Any]]:
        """Queued runs and running runs whose lease expired, oldest interval first."""
        query = (
            select(job_runs)
            .where(
                or_(
                    job_runs.c.state == "queued",
                    and_(job_runs.c.state == "running", job_runs.c.lease_expires < now),
                )
            )
            .order_by(job_runs.c.interval_start, job_runs.c.id)
        )
        with self.engine.connect() as conn:
            return [self._row(r) for r in conn.execute(query)]

    def active_count(self, job: str, now: datetime) -> int:
        """Runs of ``job`` running under a live lease."""
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count())
                    .select_from(job_runs)
                    .where(
                        and_(
                            job_runs.c.job == job,
                            job_runs.c.state == "running",
                            job_runs.c.lease_expires >= now,
                        )
                    )
                ).scalar_one()
            )

    def last_scheduled(self, job: str) -> dict[str, Any] | None:
        """The scheduled run with the latest interval, if any."""
        query = (
            select(job_runs)
            .where(and_(job_runs.c.job == job, job_runs.c.kind == "scheduled"))
            .order_by(job_runs.c.interval_start.desc())
            .limit(1)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return self._row(row) if row else None

    def get(self, run_id: int) -> dict[str, Any]:
        """One run with its task attempts."""
        with self.engine.connect() as conn:
            row = conn.execute(select(job_runs).where(job_runs.c.id == run_id)).first()
            if row is None:
                raise NotFoundError(f"no job run {run_id}")
            run = self._row(row)
            run["tasks"] = [
                self._task(t)
                for t in conn.execute(
                    select(task_runs).where(task_runs.c.run_id == run_id).order_by(task_runs.c.id)
                )
            ]
        return run

    def recent(self, job: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        """The newest runs (with task attempts), newest interval first."""
        query = (
            select(job_runs)
            .order_by(job_runs.c.interval_start.desc(), job_runs.c.id.desc())
            .limit(limit)
        )
        if job:
            query = query.where(job_runs.c.job == job)
        with self.engine.connect() as conn:
            runs = [self._row(r) for r in conn.execute(query)]
            ids = [r["id"] for r in runs]
            attempts = [
                self._task(t)
                for t in conn.execute(
                    select(task_runs).where(task_runs.c.run_id.in_(ids)).order_by(task_runs.c.id)
                )
            ]
        for run in runs:
            run["tasks"] = [t for t in attempts if t["run_id"] == run["id"]]
        return runs

    # -- task attempts ---------------------------------------------------------------
    def start_task(self, run_id: int, task: str, attempt: int, now: datetime) -> int:
        """Record the start of a task attempt; return its id."""
        with self.engine.begin() as conn:
            result = conn.execute(
                insert(task_runs).values(
                    run_id=run_id, task=task, attempt=attempt, state="running", started_at=now
                )
            )
            return int(result.inserted_primary_key[0])  # type: ignore[index]

    def finish_task(
        self, attempt_id: int, state: str, now: datetime, log: str = "", error: str | None = None
    ) -> None:
        """Record how a task attempt ended, with its log and error."""
        with self.engine.begin() as conn:
            conn.execute(
                update(task_runs)
                .where(task_runs.c.id == attempt_id)
                .values(state=state, finished_at=now, log=log, error=error)
            )

    def skip_task(self, run_id: int, task: str, now: datetime, reason: str) -> None:
        """Record a task that did not run because an upstream task did not succeed."""
        with self.engine.begin() as conn:
            conn.execute(
                insert(task_runs).values(
                    run_id=run_id,
                    task=task,
                    attempt=0,
                    state="skipped",
                    started_at=now,
                    finished_at=now,
                    error=reason,
                )
            )

    def fail_interrupted(self, run_id: int, now: datetime) -> int:
        """Mark attempts left ``running`` by a dead worker as failed; return how many."""
        with self.engine.begin() as conn:
            return int(
                conn.execute(
                    update(task_runs)
                    .where(and_(task_runs.c.run_id == run_id, task_runs.c.state == "running"))
                    .values(
                        state="failed",
                        finished_at=now,
                        error="killed mid-run: the worker's lease expired",
                    )
                ).rowcount
            )

    def task_attempts(self, run_id: int) -> list[dict[str, Any]]:
        """Every attempt of every task of a run, oldest first."""
        with self.engine.connect() as conn:
            return [
                self._task(t)
                for t in conn.execute(
                    select(task_runs).where(task_runs.c.run_id == run_id).order_by(task_runs.c.id)
                )
            ]

    @staticmethod
    def _row(row: Any) -> dict[str, Any]:
        out = dict(row._mapping)
        for key in (
            "interval_start",
            "interval_end",
            "lease_expires",
            "created_at",
            "started_at",
            "finished_at",
        ):
            out[key] = _utc(out[key])
        out["params"] = json.loads(out["params"]) if out.get("params") else {}
        return out

    @staticmethod
    def _task(row: Any) -> dict[str, Any]:
        out = dict(row._mapping)
        out["started_at"], out["finished_at"] = _utc(out["started_at"]), _utc(out["finished_at"])
        return out
