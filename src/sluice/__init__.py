"""Sluice: ingest, validate, score, act on, and land event streams.

The typed Python API builds the same objects as the pipeline YAML::

    import sluice
    p = sluice.Pipeline(name="t", source={"type": "file", "path": "events.jsonl"}, ...)
    stats = sluice.run(p, until_idle=True)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Pipeline", "__version__", "load_pipeline", "predict", "run"]

if TYPE_CHECKING:
    from sluice.config.loader import load_pipeline
    from sluice.config.models import Pipeline


def __getattr__(name: str) -> Any:
    if name == "Pipeline":
        from sluice.config.models import Pipeline

        return Pipeline
    if name == "load_pipeline":
        from sluice.config.loader import load_pipeline

        return load_pipeline
    raise AttributeError(name)


def run(pipeline: Any, settings: Any = None, **options: Any) -> Any:
    """Run a pipeline (a ``Pipeline`` or a path to its YAML) with the local runner."""
    from sluice.config.loader import load_pipeline
    from sluice.service.run import run as _run

    if not hasattr(pipeline, "source"):
        pipeline = load_pipeline(pipeline)
    return _run(pipeline, settings, **options)


def predict(data: Any, model: str | None = None, **options: Any) -> Any:
    """Score a string, a record or a list of records with a registered model."""
    from sluice.models.predict import predict as _predict

    return _predict(data, model=model, **options)
