"""The processing stages of one pipeline: decode, transforms, models and actions."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import pyarrow as pa

from sluice.config.models import Pipeline
from sluice.core.context import EpochContext, rows_as_json
from sluice.core.errors import ConfigError
from sluice.core.metrics import DRIFT_EVENTS, count_alerts, pipeline_label
from sluice.core.settings import Settings
from sluice.models.base import Model, ModelContext, build_model
from sluice.sources.base import SourceBatch
from sluice.sources.decode import Decoder, reject_flagged
from sluice.storage.checkpoints import State, Writer
from sluice.storage.db import get_engine
from sluice.transforms.base import Transform
from sluice.transforms.build import build_transforms

if TYPE_CHECKING:  # the engine (templates, outbox, dispatcher) is imported only when used
    from sluice.actions.base import JobRunner
    from sluice.actions.engine import ActionEngine
    from sluice.actions.outbox import PendingActions
    from sluice.models.drift import DriftLog, DriftWatch  # with models that watch drift

log = logging.getLogger("sluice.runner")
T = TypeVar("T")


@dataclass
class Decoded:
    """A batch decoded ahead of its epoch: the good rows and what the decode rejected."""

    table: pa.Table | None
    rejects: EpochContext

    def into(self, ctx: EpochContext) -> pa.Table | None:
        """Hand the rejects to the epoch's ``ctx`` (numbered with its epoch); the rows out."""
        for rows in self.rejects.dead_letters:
            epochs = pa.repeat(pa.scalar(ctx.epoch, pa.int64()), rows.num_rows)
            ctx.dead_letters.append(
                rows.set_column(rows.schema.get_field_index("epoch"), "epoch", epochs)
            )
        ctx.counters.update(self.rejects.counters)
        return self.table


class Stages:
    """Everything between the source and the sinks, with its checkpointable state.

    Building is pure: the constructor parses and checks the configuration and opens
    nothing (``sluice validate`` builds stages and runs ``check``). ``start()`` opens what a
    run needs (model artifacts, the online-model index, the drift log, the action
    dispatcher) and ``close()`` releases exactly that.
    """

    def __init__(
        self, pipeline: Pipeline, settings: Settings, *, job_runner: JobRunner | None = None
    ) -> None:
        self.pipeline = pipeline
        self.settings = settings
        self.decoders: dict[str, Decoder] = {}
        self.transforms: list[Transform] = build_transforms(
            pipeline.transforms, event_time=pipeline.event_time, settings=settings
        )
        mctx = ModelContext(pipeline.name, settings)
        self.models: list[Model] = [
            keyed(f"models[{i}]", build_model, cfg, mctx) for i, cfg in enumerate(pipeline.models)
        ]
        self.drift = self._drift_watches()
        self.drift_log: DriftLog | None = None
        self._drift_writers: list[Writer] = []  # this epoch's drift events, for the checkpoint
        self.actions: ActionEngine | None = None
        if pipeline.actions:
            from sluice.actions.engine import ActionEngine

            self.actions = ActionEngine(
                pipeline.actions,
                pipeline=pipeline.name,
                settings=settings,
                event_time=pipeline.event_time,
                job_runner=job_runner,
            )
        self._started = False

    def start(self) -> None:
        """Open what a run needs: models, the online-model index, drift log, dispatcher."""
        if self._started:
            return
        self._started = True
        for model in self.models:
            model.start()
        self._index_online_models()
        if self.drift:
            from sluice.models.drift import DriftLog

            self.drift_log = DriftLog(get_engine(str(self.settings.metadata_url)))
        if self.actions is not None:
            self.actions.start()

    def check(self, schema: pa.Schema | None) -> None:
        """Bind every stage to the columns flowing into it (``schema``: the decoded input).

        SQL is bound by DuckDB on empty tables, model features and keys are looked up,
        action conditions are bound after the models' output columns. Nothing is run and
        nothing is opened; errors are ConfigErrors naming the key.
        """
        for transform in self.transforms:
            if schema is None:
                return  # a step's output is only known at run time: stop checking here
            schema = transform.output_schema(schema)
        if schema is None:
            return
        for i, model in enumerate(self.models):
            schema = check_model(model, schema, f"models[{i}]")
        if self.actions is not None:
            self.actions.check(schema)

    def _index_online_models(self) -> None:
        online = [m for m in self.models if m.online]
        if not online:
            return
        from sluice.models.registry import OnlineModelIndex, OnlineModelInfo

        index = OnlineModelIndex(self.settings)
        # a partition task runs as "PIPELINE#TOPIC/PARTITION": predict reads every task's state
        pipeline = self.pipeline.name.partition("#")[0]
        prepare = prepare_steps(self.pipeline)
        for model in online:
            cfg = model.config
            index.record(
                OnlineModelInfo(cfg.name, pipeline, cfg.type, list(cfg.features), cfg.key, prepare)
            )

    def _drift_watches(self) -> dict[str, DriftWatch]:
        if not any(m.config.drift and m.config.drift.on_drift != "none" for m in self.models):
            return {}
        from sluice.models.drift import DriftWatch

        return {
            m.name: DriftWatch(m.name, m.config.drift, m.config.features)
            for m in self.models
            if m.config.drift and m.config.drift.on_drift != "none"
        }

    def _decoder(self, raw_format: str) -> Decoder:
        decoder = self.decoders.get(raw_format)
        if decoder is None:
            if not self.pipeline.schema_ and raw_format != "arrow":
                raise ConfigError(
                    f"pipeline {self.pipeline.name!r}: a schema is required to "
                    f"decode {raw_format} input"
                )
            decoder = Decoder(self.pipeline.fields, raw_format)
            self.decoders[raw_format] = decoder
        return decoder

    # -- one epoch -----------------------------------------------------------------------
    def run(
        self,
        batch: SourceBatch,
        ctx: EpochContext,
        decoded: Decoded | None = None,
        *,
        act: bool = True,
    ) -> tuple[pa.Table, PendingActions | None]:
        """Decode (unless ``decoded`` ahead) and transform ``batch``, score it, run actions
        (without ``act``: the caller calls ``act`` later, e.g. while the sinks write)."""
        self._drift_writers = []
        rows = decoded.into(ctx) if decoded is not None else self.decode(batch, ctx)
        table = self._transform(rows, ctx)
        table = self._score(table, ctx)
        return table, self.act(table, ctx) if act else None

    def act(self, table: pa.Table, ctx: EpochContext) -> PendingActions | None:
        """Evaluate the action rules on the scored ``table`` (None: no actions)."""
        return self.actions.evaluate(table, ctx) if self.actions is not None else None

    def decode(self, batch: SourceBatch, ctx: EpochContext) -> pa.Table | None:
        """Decode and validate ``batch``; rejects go to ``ctx`` (None: the batch has no data)."""
        if batch.data.num_columns == 0:
            return None
        if self.pipeline.schema_ or batch.raw_format != "arrow":
            return self._decoder(batch.raw_format).decode(batch.data, ctx)
        return reject_flagged(batch.data, ctx)

    def decode_ahead(self, batch: SourceBatch) -> Decoded:
        """Decode ``batch`` before its epoch is known (one thread at a time: the reader's)."""
        rejects = EpochContext(self.pipeline.name, 0)
        return Decoded(self.decode(batch, rejects), rejects)

    def _transform(self, table: pa.Table | None, ctx: EpochContext) -> pa.Table:
        """Apply every transform; on the final epoch flush each one's held rows downstream."""
        for index, transform in enumerate(self.transforms):
            if table is not None:
                before = ctx.counters["dead_lettered"]
                rows_in = table.num_rows
                table = transform.apply(table, ctx)
                if transform.replaces_stream:
                    late = ctx.counters["dead_lettered"] - before
                    ctx.counters["aggregated"] += rows_in - late
            if ctx.final:
                flushed = transform.finish(ctx)
                if flushed is not None and flushed.num_rows:
                    table = (
                        flushed
                        if table is None
                        else pa.concat_tables([table, flushed], promote_options="permissive")
                    )
            del index
        return table if table is not None else pa.table({})

    def _score(self, table: pa.Table, ctx: EpochContext) -> pa.Table:
        for model in self.models:
            if table.num_rows == 0:
                break
            try:
                lost = model.lost_keys()
                table = model.score(table)
                count_alerts(model.name, table)
                if model.lost_keys() > lost:
                    ctx.counters["keys_lost_unwarmed"] += model.lost_keys() - lost
                if model.name in self.drift:
                    table = self._observe_drift(model.name, table, ctx)
            except Exception as exc:
                log.warning("model %s failed on epoch %s: %s", model.name, ctx.epoch, exc)
                keep = [c for c in table.column_names if not c.startswith("__")]
                origin = (
                    table.column("__origin").combine_chunks()
                    if "__origin" in table.column_names
                    else None
                )
                ctx.dead_letter(
                    f"model:{model.name}",
                    f"model error: {type(exc).__name__}: {exc}",
                    rows_as_json(table.select(keep)),
                    origin,
                )
                table = table.slice(0, 0)
        return table

    def _observe_drift(self, name: str, table: pa.Table, ctx: EpochContext) -> pa.Table:
        watch = self.drift[name]
        table, events = watch.observe(table)
        if events:
            from sluice.models.drift import drift_writer

            ctx.counters["drift_events"] += len(events)
            DRIFT_EVENTS.labels(pipeline_label(self.pipeline.name), name).inc(len(events))
            self._drift_writers.append(
                drift_writer(self.pipeline.name, name, ctx.epoch, watch.spec.on_drift, events)
            )
            shown = ", ".join(f"{e.feature} {e.detector}={e.value:.2f}" for e in events[:3])
            more = f" and {len(events) - 3} more" if len(events) > 3 else ""
            log.warning("drift in %s: %s%s", name, shown, more)
        return table

    # -- checkpoint ----------------------------------------------------------------------
    def holds_state(self) -> bool:
        """True when a window may still hold rows to flush at end of input."""
        return any(t.holds_state for t in self.transforms)

    def states(self, *, actions: bool = True) -> dict[str, State]:
        """Every operator's and model's state, keyed by a stable operator id (without
        ``actions``: not the rules', which ``act`` may still be changing)."""
        out: dict[str, State] = {}
        for i, transform in enumerate(self.transforms):
            out[f"transform[{i}]"] = transform.state()
        for model in self.models:
            out[f"model:{model.name}"] = model.state()
        for name, watch in self.drift.items():
            out[f"drift:{name}"] = watch.state()
        if self.actions is not None and actions:
            out["actions"] = self.actions.state()
        return out

    def restore(
        self, states: dict[str, bytes], deltas: dict[str, list[bytes]] | None = None
    ) -> None:
        """Restore state saved by ``states()`` (snapshots, then the models' delta logs)."""
        for i, transform in enumerate(self.transforms):
            if f"transform[{i}]" in states:
                transform.restore(states[f"transform[{i}]"])
        for model in self.models:
            if f"model:{model.name}" in states:
                model.restore(states[f"model:{model.name}"])
                model.restore_deltas((deltas or {}).get(f"model:{model.name}", []))
        for name, watch in self.drift.items():
            if f"drift:{name}" in states:
                watch.restore(states[f"drift:{name}"])
        if self.actions is not None and "actions" in states:
            self.actions.restore(states["actions"])

    def commit_writers(self, pending: PendingActions | None, epoch: int) -> list[Writer]:
        """Rows to commit with the checkpoint: the epoch's drift events and actions outbox."""
        writers, self._drift_writers = self._drift_writers, []
        return writers + self.action_writers(pending, epoch)

    def action_writers(self, pending: PendingActions | None, epoch: int) -> list[Writer]:
        """The actions outbox rows of ``pending`` to commit with the checkpoint of ``epoch``."""
        if self.actions is None or pending is None:
            return []
        return [self.actions.outbox_writer(pending, epoch)]

    def after_commit(self) -> None:
        """Wake the action dispatcher and let models pick up promoted versions."""
        if self.actions is not None:
            self.actions.notify()
        for model in self.models:
            model.committed()
            model.refresh()

    def close(self) -> None:
        """Release what ``start()`` opened (and the decoders); safe without ``start()``."""
        for decoder in self.decoders.values():
            decoder.close()
        if self.actions is not None:
            self.actions.close()
        for model in self.models:
            model.close()


def keyed(where: str, build: Callable[..., T], *args: Any) -> T:
    """Call ``build``; a ConfigError from it gets its key placed under ``where``."""
    try:
        return build(*args)
    except ConfigError as exc:
        raise exc.within(where) from None


def check_model(model: Model, schema: pa.Schema, where: str) -> pa.Schema:
    """Check ``model``'s features and key against ``schema``; return it with the outputs."""
    config = model.config
    for what, names in (("features", config.features), ("key", [config.key] if config.key else [])):
        missing = [n for n in names if n not in schema.names]
        if missing:
            raise ConfigError(
                f"model {model.name!r}: no stage produces {', '.join(map(repr, missing))}; "
                f"available: {', '.join(n for n in schema.names if not n.startswith('__'))}",
                key=f"{where}.{what}",
            )
    for field in model.output_fields():
        if field.name not in schema.names:
            schema = schema.append(field)
    if config.drift and config.drift.on_drift != "none":
        schema = schema.append(pa.field(f"{model.name}_drift", pa.bool_()))
    return schema


_STATELESS = ("filter", "derive", "select", "rename", "enrich")


def prepare_steps(pipeline: Pipeline) -> list[dict[str, Any]]:
    """The stateless steps a record goes through before the models (for predict on raw records).

    Stateful steps that pass rows on (dedupe, a window ``into`` a side table) are skipped; after
    a window that replaces the stream the models score aggregates, so a record cannot be
    prepared and the list is empty.
    """
    steps: list[dict[str, Any]] = []
    for step in pipeline.transforms:
        if step.kind == "window" and step.window is not None and step.window.into is None:
            return []
        if step.kind in _STATELESS:
            steps.append(step.model_dump(mode="json", exclude_none=True))
    return steps
