"""Deep validation of a pipeline file: the YAML, then every stage built against the schema."""

from __future__ import annotations

from pathlib import Path

from sluice.config.loader import load_pipeline
from sluice.config.models import Pipeline
from sluice.core.errors import ConfigError
from sluice.core.settings import Settings


def check_pipeline(path: str | Path, settings: Settings | None = None) -> Pipeline:
    """Load ``path`` and build its stages so configuration errors surface before a run."""
    from sluice.runners.stages import Stages

    pipeline = load_pipeline(path)
    try:
        Stages(pipeline, settings or Settings()).close()
    except ConfigError as exc:
        if exc.file is None:
            raise ConfigError(exc.detail, file=str(path), line=exc.line, key=exc.key) from None
        raise
    return pipeline
