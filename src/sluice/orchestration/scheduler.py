"""The embedded scheduler: due intervals (croniter), runs under a unique key, leases, workers."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from sluice.actions.base import JobRunner
from sluice.core.settings import Settings
from sluice.core.types import parse_duration
from sluice.orchestration.executor import Clock, RunExecutor
from sluice.orchestration.history import RunStore
from sluice.orchestration.spec import JobsFile, JobSpec, ScheduleSpec
from sluice.storage.db import get_engine

log = logging.getLogger(__name__)
MAX_INTERVALS_PER_TICK = 1000


def utc_now() -> datetime:
    """The real clock (aware UTC)."""
    return datetime.now(UTC)


def _fires(spec: ScheduleSpec, after: datetime) -> Iterator[datetime]:
    """Schedule instants strictly after ``after``, in UTC."""
    if spec.every:
        step = parse_duration(spec.every)
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        current = epoch + ((after - epoch) // step + 1) * step
        while True:
            yield current
            current += step
    from croniter import croniter

    cron = croniter(str(spec.cron), after.astimezone(spec.tz))
    while True:
        yield cron.get_next(datetime).astimezone(UTC)


def _last_fire(spec: ScheduleSpec, now: datetime) -> datetime:
    """The latest schedule instant at or before ``now``."""
    if spec.every:
        step = parse_duration(spec.every)
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        return epoch + ((now - epoch) // step) * step
    from croniter import croniter

    # cron has minute granularity: one second later makes an exact fire time count as passed
    base = (now + timedelta(seconds=1)).astimezone(spec.tz)
    return croniter(str(spec.cron), base).get_prev(datetime).astimezone(UTC)


def _prev_fire(spec: ScheduleSpec, instant: datetime) -> datetime:
    """The schedule instant just before ``instant``."""
    if spec.every:
        return instant - parse_duration(spec.every)
    from croniter import croniter

    return croniter(str(spec.cron), instant.astimezone(spec.tz)).get_prev(datetime).astimezone(UTC)


def latest_interval(spec: ScheduleSpec, instant: datetime) -> tuple[datetime, datetime]:
    """The latest complete interval [start, end) of ``spec`` at ``instant`` (end <= instant)."""
    end = _last_fire(spec, instant)
    return _prev_fire(spec, end), end


def first_fire(spec: ScheduleSpec, instant: datetime) -> datetime:
    """The first schedule instant at or after ``instant``, in UTC."""
    return next(_fires(spec, instant.astimezone(UTC) - timedelta(microseconds=1)))


def due_intervals(
    job: JobSpec, now: datetime, last_end: datetime | None
) -> list[tuple[datetime, datetime]]:
    """Data intervals [start, end) of ``job`` whose end has passed and that have no run yet.

    Without catch-up only the latest complete interval is due; with catch-up every interval
    since the last run (or ``start_date``) is.
    """
    spec = job.schedule_spec
    if spec is None:
        return []
    latest = latest_interval(spec, now)
    latest_end = latest[1]
    if last_end is not None and latest_end <= last_end:
        return []
    origin = last_end
    if origin is None and job.catchup and job.start_date is not None:
        start = job.start_date if job.start_date.tzinfo else job.start_date.replace(tzinfo=spec.tz)
        origin = first_fire(spec, start)
    if not job.catchup or origin is None:
        return [latest] if latest[0] >= (origin or latest[0]) else []
    return _intervals_between(spec, origin, latest_end)


def _intervals_between(
    spec: ScheduleSpec, origin: datetime, until: datetime
) -> list[tuple[datetime, datetime]]:
    out: list[tuple[datetime, datetime]] = []
    start = origin
    for end in _fires(spec, origin):
        if end > until or len(out) >= MAX_INTERVALS_PER_TICK:
            break
        out.append((start, end))
        start = end
    return out


def backfill_intervals(
    job: JobSpec, start: datetime, end: datetime
) -> list[tuple[datetime, datetime]]:
    """Every schedule interval of ``job`` that starts in [start, end)."""
    spec = job.schedule_spec or ScheduleSpec(every="1d")
    first = next(_fires(spec, start - timedelta(microseconds=1)))
    return [(s, e) for s, e in _intervals_between(spec, first, end + _step(spec, end)) if s < end]


def _step(spec: ScheduleSpec, at: datetime) -> timedelta:
    fires = _fires(spec, at)
    first = next(fires)
    return next(fires) - first


class Scheduler:
    """Creates due runs of the jobs in the metadata DB and executes them on worker threads."""

    def __init__(
        self,
        settings: Settings,
        jobs: JobsFile,
        *,
        clock: Clock = utc_now,
        max_workers: int = 2,
        lease: str = "60s",
        owner: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        job_runner: JobRunner | None = None,
    ) -> None:
        self.settings, self.jobs, self.clock = settings, jobs, clock
        self.store = RunStore(get_engine(str(settings.ensure().metadata_url)))
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease = parse_duration(lease)
        self.executor = RunExecutor(
            settings,
            self.store,
            clock=clock,
            owner=self.owner,
            lease=self.lease,
            sleep=sleep,
            job_runner=job_runner,
        )
        self.pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="sluice-job")
        self.max_workers = max_workers
        self._inflight: dict[int, Future[str]] = {}
        self._lock = threading.Lock()

    def create_due_runs(self) -> list[int]:
        """Queue a run for every due interval; runs another scheduler made are left alone."""
        now = self.clock()
        created = []
        for job in self.jobs.jobs:
            last = self.store.last_scheduled(job.name)
            for start, end in due_intervals(job, now, last["interval_end"] if last else None):
                run_id = self.store.create(job.name, start, end, now)
                if run_id is not None:
                    created.append(run_id)
        return created

    def tick(self, wait: bool = True) -> list[dict[str, Any]]:
        """Queue due runs, start claimable ones within the limits; return the started runs."""
        self.create_due_runs()
        started = self.dispatch()
        if wait:
            self.wait()
        return started

    def dispatch(self) -> list[dict[str, Any]]:
        """Claim and start queued (or lease-expired) runs within the concurrency limits."""
        now = self.clock()
        started = []
        by_name = {job.name: job for job in self.jobs.jobs}
        with self._lock:
            self._inflight = {k: f for k, f in self._inflight.items() if not f.done()}
            for run in self.store.claimable(now):
                job = by_name.get(run["job"])
                if job is None or len(self._inflight) >= self.max_workers:
                    continue
                if self.store.active_count(job.name, now) >= job.max_active_runs:
                    continue
                if not self.store.claim(run["id"], self.owner, now, now + self.lease):
                    continue
                self._inflight[run["id"]] = self.pool.submit(self._execute, job, run)
                started.append(run)
        return started

    def _execute(self, job: JobSpec, run: dict[str, Any]) -> str:
        try:
            return self.executor.execute(job, run)
        except Exception:
            log.exception("job %s run %s crashed", job.name, run["id"])
            self.store.finish(run["id"], "failed", self.clock())
            return "failed"

    def wait(self) -> dict[int, str]:
        """Wait for the runs started by this scheduler; return their final states."""
        with self._lock:
            inflight = dict(self._inflight)
        return {run_id: future.result() for run_id, future in inflight.items()}

    def run_forever(self, stop_event: threading.Event, poll: float = 5.0) -> None:
        """Tick every ``poll`` seconds until ``stop_event`` is set; then finish running runs."""
        while not stop_event.is_set():
            try:
                self.tick(wait=False)
            except Exception:
                log.exception("scheduler tick failed")
            stop_event.wait(poll)
        self.close()

    def close(self) -> None:
        """Wait for running runs and stop the worker threads."""
        self.pool.shutdown(wait=True)
