"""Pick the runner for a pipeline: local (one task per partition for Kafka), spark or beam."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sluice.config.models import Pipeline
from sluice.core.errors import ConfigError
from sluice.core.settings import Settings
from sluice.runners.local import LocalRunner
from sluice.runners.stats import RunStats
from sluice.sources.base import source_class

if TYPE_CHECKING:
    from sluice.runners.bounded import BatchRunner

RUNNERS = ("local", "spark", "beam")
_BATCH_OPTIONS = ("idle_timeout", "job_runner", "model_partitions")


def create_runner(
    pipeline: Pipeline, settings: Settings | None = None, **options: Any
) -> LocalRunner:
    """The runner for ``pipeline``: one task per partition for partitioned sources (Kafka)."""
    if source_class(pipeline.source).partitioned:
        from sluice.runners.partitioned import PartitionedRunner  # with its Kafka plumbing

        return PartitionedRunner(pipeline, settings, **options)
    return LocalRunner(pipeline, settings, **options)


def create_batch_runner(
    kind: str, pipeline: Pipeline, settings: Settings | None = None, **options: Any
) -> BatchRunner:
    """A ``spark`` or ``beam`` runner (``master`` / ``beam_options`` go to the engine)."""
    common = {k: v for k, v in options.items() if k in _BATCH_OPTIONS}
    if kind == "spark":
        from sluice.runners.spark import SparkRunner

        return SparkRunner(pipeline, settings, master=options.get("master"), **common)
    if kind == "beam":
        from sluice.runners.beam import BeamRunner

        return BeamRunner(pipeline, settings, beam_options=options.get("beam_options"), **common)
    raise ConfigError(f"unknown runner {kind!r}; use {', '.join(RUNNERS)}")


def run(pipeline: Pipeline, settings: Settings | None = None, **options: Any) -> RunStats:
    """Run ``pipeline`` (``until_idle=True`` for bounded inputs)."""
    return create_runner(pipeline, settings, **options).run()
