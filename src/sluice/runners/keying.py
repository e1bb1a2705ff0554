"""Refuse per-key state over partitions that split a key's records between tasks.

The partitioned runner keeps windows, dedupe and per-key model state in the task of the
partition that holds the records. When the input topics' records are not partitioned by
that key (a plain console producer sends no key), one device's records land in several
tasks and each task computes its own, wrong, windows. ``check_keying`` stops such a run
before it reads anything, saying how to fix the pipeline.
"""

from __future__ import annotations

from sluice.config.loader import line_of
from sluice.config.models import Pipeline
from sluice.core.errors import ConfigError
from sluice.sources.base import Partitioning


def stateful_keys(pipeline: Pipeline) -> list[tuple[str, tuple[str, ...]]]:
    """``(stage, key fields)`` of every stage that keeps state per key."""
    found: list[tuple[str, tuple[str, ...]]] = []
    for i, step in enumerate(pipeline.transforms):
        spec = step.spec
        if step.kind in ("window", "dedupe") and spec.key is not None:
            key = (spec.key,) if isinstance(spec.key, str) else tuple(spec.key)
            found.append((f"transforms[{i}].{step.kind}", key))
    for i, model in enumerate(pipeline.models):
        if model.key is not None:
            found.append((f"models[{i}] ({model.name})", (model.key,)))
    return found


def check_keying(pipeline: Pipeline, partitioning: Partitioning) -> None:
    """A ConfigError when a keyed stage would see a key's records split over partitions."""
    if partitioning.partitions <= 1:
        return
    for stage, key in stateful_keys(pipeline):
        if partitioning.key is not None and set(partitioning.key) <= set(key):
            continue
        field = key[0]
        topics = ", ".join(partitioning.topics) or "the input"
        raise ConfigError(
            f"{stage} keeps state per {', '.join(key)}, but {topics} has "
            f"{partitioning.partitions} partitions whose records are not known to be keyed by "
            f"{field}: one {field}'s records would be split over partition tasks and give wrong "
            f"results. Fix: add 'repartition: {{key: {field}}}' to the source (records are "
            f"routed through the topic {pipeline.name}-repartition keyed by {field}), or, if "
            f"every record's Kafka key is its {field} (e.g. 'sluice produce --key {field}'), "
            f"declare 'keyed_by: {field}' on the source",
            file=pipeline.source_file,
            line=line_of(pipeline, "source"),
            key="source",
        )
