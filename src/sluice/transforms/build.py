"""Build the transform operators of a pipeline from its ``transforms:`` steps."""

from __future__ import annotations

from typing import Any

from sluice.config.models import TransformStep
from sluice.core.errors import ConfigError
from sluice.core.settings import Settings
from sluice.transforms.base import Transform


def build_transform(
    step: TransformStep, index: int, *, event_time: str | None, settings: Settings
) -> Transform:
    """Build the operator for one step; ``index`` is its position in ``transforms``."""
    kind, spec = step.kind, step.spec
    if kind in ("filter", "derive", "select", "rename"):
        return _build_sql(kind, spec, index)
    if kind == "enrich":
        from sluice.transforms.enrich import EnrichTransform

        return EnrichTransform(spec, index, settings)
    if kind == "window":
        from sluice.transforms.window import WindowTransform

        return WindowTransform(spec, index, event_time)
    if kind == "dedupe":
        from sluice.transforms.dedupe import DedupeTransform

        return DedupeTransform(spec, index, event_time)
    raise ConfigError(f"unknown transform {kind!r}", key=f"transforms[{index}]")


def _build_sql(kind: str, spec: Any, index: int) -> Transform:
    from sluice.transforms import sql

    if kind == "filter":
        return sql.FilterTransform(spec, index)
    if kind == "derive":
        return sql.DeriveTransform(spec, index)
    if kind == "select":
        return sql.SelectTransform(spec, index)
    return sql.RenameTransform(spec, index)


def build_transforms(
    steps: list[TransformStep], *, event_time: str | None, settings: Settings
) -> list[Transform]:
    """Build every step in order; errors name the step (``transforms[2].window: ...``)."""
    out: list[Transform] = []
    for index, step in enumerate(steps):
        try:
            out.append(build_transform(step, index, event_time=event_time, settings=settings))
        except ConfigError as exc:
            where = f"transforms[{index}]"
            if exc.key and exc.key.startswith(where):
                raise
            raise ConfigError(
                exc.detail, file=exc.file, line=exc.line, key=f"{where}.{step.kind}"
            ) from None
    return out
