"""Runs pipelines continuously in worker threads: restart with backoff, status, graceful stop."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

from sluice.actions.base import JobRunner
from sluice.config.models import Pipeline
from sluice.core.errors import NotFoundError
from sluice.core.settings import Settings
from sluice.runners.create import create_runner
from sluice.runners.local import LocalRunner
from sluice.runners.stats import RunStats

log = logging.getLogger("sluice.serve")
MAX_BACKOFF = 60.0


class PipelineWorker:
    """One pipeline in its own thread; crashes are retried with exponential backoff."""

    def __init__(
        self,
        pipeline: Pipeline,
        settings: Settings,
        group: str | None = None,
        job_runner: JobRunner | None = None,
    ) -> None:
        self.pipeline, self.settings, self.group = pipeline, settings, group
        self.job_runner = job_runner
        self.state = "stopped"
        self.restarts = 0
        self.errors = 0
        self.last_error: str | None = None
        self._base_total = 0
        self._current = 0
        self.rate = 0.0
        self.epoch = 0
        self.last_checkpoint: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._runner: LocalRunner | None = None
        self._last_tick: tuple[float, int] | None = None
        self._history_cache: tuple[int, str | None, int] | None = None

    def start(self) -> None:
        """Start the worker thread (no-op when it runs)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop = threading.Event()
        self.state = "starting"
        self._thread = threading.Thread(
            target=self._loop, name=f"pipeline-{self.pipeline.name}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Ask the worker to finish its epoch, checkpoint and stop."""
        if self._thread is not None and self._thread.is_alive():
            self.state = "stopping"
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the worker thread to end."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            try:
                self._base_total += self._current
                self._current = 0
                self._last_tick = None
                self._runner = create_runner(
                    self.pipeline,
                    self.settings,
                    group=self.group,
                    on_progress=self._progress,
                    stop_event=self._stop,
                    job_runner=self.job_runner,
                )
                self.state = "running"
                self._runner.run()
                backoff = 1.0
            except Exception as exc:
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.state = "failed"
                log.error(
                    "pipeline %s failed (%s); restarting in %.0fs",
                    self.pipeline.name,
                    self.last_error,
                    backoff,
                )
                if self._stop.wait(backoff):
                    break
                self.restarts += 1
                backoff = min(backoff * 2, MAX_BACKOFF)
        self.state = "stopped"

    def _progress(self, stats: RunStats) -> None:
        now = time.monotonic()
        if self._last_tick is not None and stats.events_in >= self._last_tick[1]:
            seconds = now - self._last_tick[0]
            if seconds > 0:
                instant = (stats.events_in - self._last_tick[1]) / seconds
                self.rate = instant if self.rate == 0 else 0.7 * self.rate + 0.3 * instant
        self._last_tick = (now, stats.events_in)
        self._current = stats.events_in
        if self._runner is not None:
            self.epoch = self._runner.epoch
        self.last_checkpoint = datetime.now(UTC).isoformat()

    @property
    def events_total(self) -> int:
        """Events read by every run of this worker."""
        return self._base_total + self._current

    def _history(self) -> tuple[int, str | None, int]:
        """Events of earlier runs, last checkpoint time and epoch from the metadata DB."""
        from sluice.storage.checkpoints import CheckpointStore
        from sluice.storage.db import get_engine
        from sluice.storage.runs import RunHistory

        if self._history_cache is None:
            engine = get_engine(str(self.settings.metadata_url))
            runs = RunHistory(engine).recent(self.pipeline.name, limit=1000)
            before = sum(
                int(r["stats"].get("events_in", 0)) for r in runs if r["status"] != "running"
            )
            ckpt = CheckpointStore(engine).load(self.pipeline.name)
            at = ckpt.updated_at.isoformat() if ckpt.updated_at else None
            self._history_cache = (before, at, ckpt.epoch)
        return self._history_cache

    def status(self) -> dict[str, Any]:
        """The pipeline's status for the API and dashboard."""
        earlier, checkpoint_at, checkpoint_epoch = self._history()
        runner = self._runner
        lag: Any = runner.source.lag() if runner is not None else {}
        idle = self._last_tick is None or time.monotonic() - self._last_tick[0] > 5
        return {
            "name": self.pipeline.name,
            "state": self.state,
            "events_total": earlier + self.events_total,
            "events_per_second": 0.0 if idle else round(self.rate, 1),
            "lag": lag,
            "last_checkpoint": self.last_checkpoint or checkpoint_at,
            "epoch": runner.epoch if runner is not None else checkpoint_epoch,
            "errors": self.errors,
            "last_error": self.last_error,
            "restarts": self.restarts,
            "source": self.pipeline.source.model_dump(exclude_none=True),
            "tables": _lake_tables(self.pipeline),
        }


def _lake_tables(pipeline: Pipeline) -> list[str]:
    tables = [s.table for s in pipeline.sinks if s.type == "lake" and s.table]
    tables += [t.window.into for t in pipeline.transforms if t.window and t.window.into]
    return tables


class PipelineSupervisor:
    """The serve runtime's pipelines, as the API's ``PipelinesProvider``."""

    def __init__(
        self,
        pipelines: list[Pipeline],
        settings: Settings,
        group: str | None = None,
        job_runner: JobRunner | None = None,
    ) -> None:
        names = [p.name for p in pipelines]
        duplicates = {n for n in names if names.count(n) > 1}
        if duplicates:
            raise NotFoundError(f"two pipelines share the name(s) {', '.join(duplicates)}")
        self.workers = {p.name: PipelineWorker(p, settings, group, job_runner) for p in pipelines}

    def _worker(self, name: str) -> PipelineWorker:
        try:
            return self.workers[name]
        except KeyError:
            raise NotFoundError(f"no pipeline named {name!r} is served here") from None

    def list(self) -> list[dict[str, Any]]:
        """Status of every pipeline."""
        return [w.status() for w in self.workers.values()]

    def get(self, name: str) -> dict[str, Any]:
        """Status of one pipeline."""
        return self._worker(name).status()

    def start(self, name: str) -> dict[str, Any]:
        """Start a pipeline."""
        worker = self._worker(name)
        worker.start()
        return worker.status()

    def stop(self, name: str) -> dict[str, Any]:
        """Request a pipeline to stop after its current epoch."""
        worker = self._worker(name)
        worker.stop()
        return worker.status()

    def start_all(self) -> None:
        """Start every pipeline."""
        for worker in self.workers.values():
            worker.start()

    def stop_all(self, timeout: float = 60.0) -> None:
        """Stop every pipeline and wait for their final checkpoints."""
        for worker in self.workers.values():
            worker.stop()
        deadline = time.monotonic() + timeout
        for worker in self.workers.values():
            worker.join(max(0.0, deadline - time.monotonic()))
