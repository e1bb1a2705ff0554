"""Run one job run: tasks in dependency order, retries with backoff, timeouts, skips, resume."""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sluice.actions.base import JobRunner
from sluice.core.metrics import JOB_RUNS
from sluice.core.settings import Settings
from sluice.orchestration.history import RunStore
from sluice.orchestration.spec import JobSpec, TaskSpec
from sluice.orchestration.tasks import TaskContext, execute_task, template_variables

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]
MAX_BACKOFF = timedelta(hours=1)


class TaskTimeoutError(Exception):
    """An attempt ran longer than its timeout."""


class LeaseLostError(Exception):
    """Another worker took over the run (this worker's lease expired)."""


def run_with_timeout(
    work: Callable[[], None],
    timeout: float | None,
    heartbeat: Callable[[], None] | None = None,
    beat: float = 5.0,
) -> None:
    """Run ``work`` in a thread; raise TaskTimeoutError if it outlives ``timeout`` seconds.

    A Python thread cannot be killed: a timed-out attempt is recorded as failed and its
    thread is abandoned (``shell`` tasks run in a subprocess, which is killed instead).
    """
    errors: list[BaseException] = []

    def target() -> None:
        try:
            work()
        except BaseException as exc:  # handed to the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True, name="sluice-task")
    thread.start()
    deadline = None if timeout is None else time.monotonic() + timeout
    while thread.is_alive():
        wait = beat if deadline is None else max(0.0, min(beat, deadline - time.monotonic()))
        thread.join(wait)
        if thread.is_alive():
            if deadline is not None and time.monotonic() >= deadline:
                raise TaskTimeoutError(f"timed out after {timeout:g}s")
            if heartbeat:
                heartbeat()
    if errors:
        raise errors[0]


class RunExecutor:
    """Executes claimed runs and records every task attempt in the run store."""

    def __init__(
        self,
        settings: Settings,
        store: RunStore,
        *,
        clock: Clock,
        owner: str,
        lease: timedelta,
        sleep: Callable[[float], None] = time.sleep,
        job_runner: JobRunner | None = None,
    ) -> None:
        self.settings, self.store, self.clock = settings, store, clock
        self.job_runner = job_runner
        self.owner, self.lease, self.sleep = owner, lease, sleep

    def execute(self, job: JobSpec, run: dict[str, Any]) -> str:
        """Run (or resume) ``run`` of ``job``; return its final state (``lost`` if taken over)."""
        try:
            return self._execute(job, run)
        except LeaseLostError:
            log.warning("job %s run %s: lease lost; another worker resumes it", job.name, run["id"])
            return "lost"

    def _execute(self, job: JobSpec, run: dict[str, Any]) -> str:
        run_id = int(run["id"])
        self._renew(run_id)  # still ours? only then clean up after a dead worker
        self.store.fail_interrupted(run_id, self.clock())
        history = self.store.task_attempts(run_id)
        params = {**job.params, **(run.get("params") or {})}
        variables = template_variables(
            job.name, run["interval_start"], run["interval_end"], params, run_id
        )
        states: dict[str, str] = {}
        for task in job.topological_order():
            mine = [a for a in history if a["task"] == task.name]
            if mine and mine[-1]["state"] == "success":
                states[task.name] = "success"
                continue
            blocked = [d for d in task.depends_on if states.get(d) != "success"]
            if blocked:
                self.store.skip_task(
                    run_id,
                    task.name,
                    self.clock(),
                    f"upstream did not succeed: {', '.join(blocked)}",
                )
                states[task.name] = "skipped"
                continue
            failed_before = sum(1 for a in mine if a["state"] == "failed")
            states[task.name] = self._attempts(job, task, run_id, variables, failed_before)
        final = "success" if all(s == "success" for s in states.values()) else "failed"
        self.store.finish(run_id, final, self.clock())
        JOB_RUNS.labels(job.name, final).inc()
        return final

    def _attempts(
        self,
        job: JobSpec,
        task: TaskSpec,
        run_id: int,
        variables: dict[str, Any],
        failed_before: int,
    ) -> str:
        allowed = job.task_retries(task) + 1
        delay = job.task_retry_delay(task)
        attempt = failed_before
        while attempt < allowed:
            if attempt:
                backoff = min(delay * (2 ** (attempt - 1)), MAX_BACKOFF)
                self._sleep(backoff.total_seconds(), run_id)
            attempt += 1
            if self.attempt(job, task, run_id, attempt, variables):
                return "success"
        return "failed"

    def attempt(
        self, job: JobSpec, task: TaskSpec, run_id: int, attempt: int, variables: dict[str, Any]
    ) -> bool:
        """Run one attempt of ``task``; record it; True on success."""
        self._renew(run_id)
        attempt_id = self.store.start_task(run_id, task.name, attempt, self.clock())
        ctx = TaskContext(
            self.settings,
            job.name,
            task.name,
            variables,
            now=self.clock(),
            timeout=job.task_timeout(task),
            job_runner=self.job_runner,
        )
        error = None
        try:
            run_with_timeout(
                lambda: execute_task(task.type, task.options, ctx),
                ctx.timeout,
                heartbeat=lambda: self._renew(run_id),
            )
        except LeaseLostError:
            raise
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, TaskTimeoutError):
                ctx.log(traceback.format_exc(limit=5))
            log.warning("job %s task %s attempt %d failed: %s", job.name, task.name, attempt, error)
        state = "failed" if error else "success"
        self.store.finish_task(attempt_id, state, self.clock(), "\n".join(ctx.lines), error)
        return error is None

    def _sleep(self, seconds: float, run_id: int) -> None:
        """Back off without letting the lease lapse."""
        chunk = max(self.lease.total_seconds() / 3, 0.001)
        while seconds > 0:
            self.sleep(min(seconds, chunk))
            seconds -= chunk
            self._renew(run_id)

    def _renew(self, run_id: int) -> None:
        if not self.store.renew(run_id, self.owner, self.clock() + self.lease):
            raise LeaseLostError(f"run {run_id}")
