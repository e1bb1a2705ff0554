"""Pick the runner for a pipeline: one task per partition for partitioned sources (Kafka)."""

from __future__ import annotations

from typing import Any

from sluice.config.models import Pipeline
from sluice.core.settings import Settings
from sluice.runners.local import LocalRunner
from sluice.runners.partitioned import PartitionedRunner
from sluice.runners.stats import RunStats
from sluice.sources.base import source_class


def create_runner(
    pipeline: Pipeline, settings: Settings | None = None, **options: Any
) -> LocalRunner:
    """The runner for ``pipeline``: one task per partition for partitioned sources (Kafka)."""
    if source_class(pipeline.source).partitioned:
        return PartitionedRunner(pipeline, settings, **options)
    return LocalRunner(pipeline, settings, **options)


def run(pipeline: Pipeline, settings: Settings | None = None, **options: Any) -> RunStats:
    """Run ``pipeline`` (``until_idle=True`` for bounded inputs)."""
    return create_runner(pipeline, settings, **options).run()
