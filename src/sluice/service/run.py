"""Runners wired to the rest of the system (the ``run_job`` action queues jobs)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sluice.config.models import Pipeline
from sluice.core.settings import Settings
from sluice.runners.create import create_batch_runner, create_runner
from sluice.runners.local import LocalRunner
from sluice.runners.stats import RunStats

if TYPE_CHECKING:
    from sluice.runners.bounded import BatchRunner


def job_runner(settings: Settings) -> Callable[[str, dict[str, Any], str], None]:
    """The ``run_job`` action's runner; the scheduler is imported when a job is queued."""

    def run(job: str, params: dict[str, Any], idempotency_key: str) -> None:
        from sluice.orchestration.service import job_runner as queue_job

        queue_job(settings)(job, params, idempotency_key)

    return run


def build_runner(
    pipeline: Pipeline, settings: Settings | None = None, **options: Any
) -> LocalRunner:
    """The runner for ``pipeline`` with the scheduler's ``job_runner`` passed in."""
    settings = settings or Settings()
    options.setdefault("job_runner", job_runner(settings))
    return create_runner(pipeline, settings, **options)


def build_batch_runner(
    kind: str, pipeline: Pipeline, settings: Settings | None = None, **options: Any
) -> BatchRunner:
    """A ``spark`` or ``beam`` runner for ``pipeline``, its actions' jobs queued as usual."""
    settings = settings or Settings()
    options.setdefault("job_runner", job_runner(settings))
    return create_batch_runner(kind, pipeline, settings, **options)


def run(pipeline: Pipeline, settings: Settings | None = None, **options: Any) -> RunStats:
    """Run ``pipeline`` (``until_idle=True`` for bounded inputs)."""
    return build_runner(pipeline, settings, **options).run()
