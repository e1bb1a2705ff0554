"""Deep validation of a pipeline file: every stage built and bound to its input, nothing run.

``check_pipeline`` builds the source, the transforms, the models, the actions and the sinks
(constructors open nothing), binds every SQL expression with DuckDB on empty tables of the
schema flowing through it, and checks model features and action conditions against the
columns available at that point. It writes no row, file or message anywhere.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from sluice.config.loader import line_of, load_pipeline
from sluice.config.models import Pipeline
from sluice.core.errors import ConfigError
from sluice.core.settings import Settings
from sluice.core.types import arrow_type
from sluice.runners.stages import Stages, keyed
from sluice.sinks.base import Sink, SinkContext, create_sink
from sluice.sources.base import SourceContext, create_source


def check_pipeline(path: str | Path, settings: Settings | None = None) -> Pipeline:
    """Load ``path`` and build and bind every stage; errors name the file, line and key."""
    pipeline = load_pipeline(path)
    try:
        check(pipeline, settings or Settings())
    except ConfigError as exc:
        raise located(exc, pipeline, path) from None
    return pipeline


def located(exc: ConfigError, pipeline: Pipeline, path: str | Path | None) -> ConfigError:
    """``exc`` naming the file and line of its key in the file ``pipeline`` came from."""
    if exc.file is not None or path is None:
        return exc
    line = exc.line or (line_of(pipeline, exc.key) if exc.key else None)
    return ConfigError(exc.detail, file=str(path), line=line, key=exc.key)


def check(pipeline: Pipeline, settings: Settings) -> None:
    """Build every part of ``pipeline`` and bind it to the schema; open and run nothing."""
    context = SourceContext(pipeline=pipeline.name, home=str(settings.home))
    source = keyed("source", create_source, pipeline.source, context)
    sink_ctx = SinkContext(pipeline.name, settings, pipeline.event_time)
    sinks: list[Sink] = []
    stages: Stages | None = None
    try:
        for i, cfg in enumerate(pipeline.sinks):
            sinks.append(keyed(f"sinks[{i}]", create_sink, cfg, sink_ctx))
        stages = Stages(pipeline, settings)
        stages.check(decoded_schema(pipeline))
    finally:
        for closer in [
            source.close,
            *(s.close for s in sinks),
            *([stages.close] if stages else []),
        ]:
            closer()


def decoded_schema(pipeline: Pipeline) -> pa.Schema | None:
    """The columns the decode stage produces (None when the pipeline declares no schema)."""
    if not pipeline.schema_:
        return None
    return pa.schema([(name, arrow_type(spec.type)) for name, spec in pipeline.fields.items()])
