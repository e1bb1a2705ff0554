"""What the metadata database says about models at one moment, read without any model bytes.

One look reads the registry's versions, the online-model index and the epochs of the online
models' saved states; a model's *marker* (its registry version, or its online entry and state
epoch) changes exactly when the model to serve changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, func, select

from sluice.models.registry import ModelRegistry, ModelVersion, OnlineModelIndex, OnlineModelInfo
from sluice.storage.checkpoints import operator_state, operator_state_delta


@dataclass(frozen=True)
class ModelSource:
    """Where the model to serve under a name comes from, and its marker."""

    online: OnlineModelInfo | None
    version: ModelVersion | None
    marker: Any
    streams: tuple[str, ...] = ()  # the streams holding an online model's saved states

    @property
    def number(self) -> int:
        """The version answered to clients: registry version, or online state epoch."""
        if self.version is not None:
            return self.version.version
        return int(self.marker[1] or 0)


@dataclass
class Catalog:
    """Registry versions, online models and the epochs of their saved states."""

    versions: list[ModelVersion]
    online: list[OnlineModelInfo]
    state_epochs: dict[tuple[str, str], int]  # (pipeline, "model:NAME") -> epoch of the state

    @classmethod
    def read(cls, engine: Engine, registry: ModelRegistry, index: OnlineModelIndex) -> Catalog:
        """One look at the metadata database."""
        epochs: dict[tuple[str, str], int] = {}
        with engine.connect() as conn:
            for table in (operator_state, operator_state_delta):  # a delta is newer
                rows = conn.execute(
                    select(table.c.pipeline, table.c.operator, func.max(table.c.epoch))
                    .where(table.c.operator.like("model:%"))
                    .group_by(table.c.pipeline, table.c.operator)
                ).all()
                epochs.update({(r[0], r[1]): int(r[2]) for r in rows})
        return cls(versions=registry.list(), online=index.list(), state_epochs=epochs)

    def version(self, name: str) -> ModelVersion | None:
        """The production version of ``name``, else its newest one."""
        mine = [v for v in self.versions if v.name == name]
        return next((v for v in mine if v.stage == "production"), mine[0] if mine else None)

    def online_model(self, name: str) -> OnlineModelInfo | None:
        """The online model called ``name``, if any."""
        return next((m for m in self.online if m.name == name), None)

    def state_streams(self, info: OnlineModelInfo) -> dict[str, int]:
        """Epoch of each saved state of the online model, by stream: its pipeline's, or one
        per partition task (``PIPELINE#TOPIC/PARTITION``) of a Kafka pipeline."""
        operator, tasks = f"model:{info.name}", f"{info.pipeline}#"
        return {
            stream: epoch
            for (stream, op), epoch in self.state_epochs.items()
            if op == operator and (stream == info.pipeline or stream.startswith(tasks))
        }

    def state_epoch(self, info: OnlineModelInfo) -> int | None:
        """The newest epoch of the online model's saved states (None: it has learned nothing)."""
        return max(self.state_streams(info).values(), default=None)

    def source(self, name: str) -> ModelSource | None:
        """Where ``name`` comes from now (an online model wins over a registry name)."""
        info = self.online_model(name)
        if info is not None:
            streams = self.state_streams(info)
            marker = (info, max(streams.values(), default=None), tuple(sorted(streams.items())))
            return ModelSource(info, None, marker, tuple(sorted(streams)))
        version = self.version(name)
        return ModelSource(None, version, version.version) if version is not None else None

    def default_name(self, text: bool) -> str | None:
        """The model for a request naming none (see ``sluice.models.predict``)."""
        production = [v for v in self.versions if v.stage == "production"]
        if text:
            return next((v.name for v in production if v.format == "text_classifier"), None)
        trained = [m for m in self.online if self.state_epoch(m) is not None]
        online = trained or self.online
        if online:
            return online[0].name
        return next((v.name for v in production if v.format != "text_classifier"), None)
