"""``sluice.predict``: score a string, a record or a list of records with a model.

Defaults: a string goes to the production text classifier; a record goes to the first
online anomaly model (by name) that has learned state (scored from its pipeline's latest
checkpoint, without learning), else to the first production model of another kind.
``model=NAME`` picks one.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pyarrow as pa

from sluice.config.models import ModelConfig
from sluice.core.errors import ModelError, NotFoundError
from sluice.core.settings import Settings
from sluice.models.base import Model, ModelContext, create_model
from sluice.models.registry import ModelRegistry, OnlineModelIndex, OnlineModelInfo
from sluice.storage.checkpoints import CheckpointStore
from sluice.storage.db import get_engine

_OUTPUTS = ("label", "proba", "score", "anomaly", "reason")


class Predictor:
    """Loads models once, refreshes them at most every ``refresh_seconds``, predicts."""

    def __init__(self, settings: Settings | None = None, refresh_seconds: float = 2.0) -> None:
        self.settings = settings or Settings()
        self.refresh_seconds = refresh_seconds
        self.registry = ModelRegistry(self.settings)
        self.online = OnlineModelIndex(self.settings)
        self.checkpoints = CheckpointStore(get_engine(str(self.settings.metadata_url)))
        self._cache: dict[str, tuple[float, Model, Any]] = {}
        self._lock = threading.Lock()

    def default_model(self, text: bool) -> str:
        """The model used when the request names none."""
        versions = [v for v in self.registry.list() if v.stage == "production"]
        if text:
            found = next((v.name for v in versions if v.format == "text_classifier"), None)
        else:
            online = self.online.list()
            trained = [
                m for m in online if f"model:{m.name}" in self.checkpoints.load(m.pipeline).states
            ]
            online = trained or online
            found = (
                online[0].name
                if online
                else next((v.name for v in versions if v.format != "text_classifier"), None)
            )
        if found is None:
            kind = "text classifier" if text else "model for records"
            raise NotFoundError(
                f"no {kind} is available; run `sluice demo` or train one with `sluice models train`"
            )
        return found

    def _load(self, name: str) -> tuple[Model, Any]:
        now = time.monotonic()
        cached = self._cache.get(name)
        if cached and now - cached[0] < self.refresh_seconds:
            return cached[1], cached[2]
        info = self.online.get(name)
        if info is not None:
            model, marker = self._load_online(info)
        else:
            version = self.registry.get(name)
            config = ModelConfig.model_validate(
                {
                    "name": name,
                    "type": version.format,
                    "features": version.features,
                    "registry": name,
                    "version": version.version,
                }
            )
            model = create_model(config, ModelContext("predict", self.settings))
            marker = version.version
        if cached and cached[2] == marker:
            model = cached[1]
        self._cache[name] = (now, model, marker)
        return model, marker

    def _load_online(self, info: OnlineModelInfo) -> tuple[Model, Any]:
        config = ModelConfig(name=info.name, type=info.type, features=info.features, key=info.key)
        model = create_model(config, ModelContext(info.pipeline, self.settings))
        checkpoint = self.checkpoints.load(info.pipeline)
        blob = checkpoint.states.get(f"model:{info.name}")
        if blob:
            model.restore(blob)
        return model, checkpoint.epoch

    def predict(self, data: Any, model: str | None = None) -> dict[str, Any]:
        """Score ``data`` (a string, a record, or a list of either)."""
        records = data if isinstance(data, list) else [data]
        if not records:
            raise ModelError("nothing to predict: 'data' is empty")
        texts = all(isinstance(r, str) for r in records)
        if not texts and not all(isinstance(r, dict) for r in records):
            raise ModelError("'data' must be a string, an object, or a list of strings or objects")
        name = model or self.default_model(text=texts)
        with self._lock:
            loaded, marker = self._load(name)
            table = _to_table(records, loaded, texts)
            scored = _score_only(loaded, table)
        predictions = _predictions(scored, name)
        result: dict[str, Any] = {"model": name, "version": marker}
        if isinstance(data, list):
            result["predictions"] = predictions
        else:
            result["prediction"] = predictions[0]
        return result


def _to_table(records: list[Any], model: Model, texts: bool) -> pa.Table:
    if texts:
        column = getattr(model, "text_column", "text")
        return pa.table({column: pa.array(records, pa.string())})
    try:
        return pa.Table.from_pylist(records)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ModelError(f"records do not form a table: {exc}") from None


def _score_only(model: Model, table: pa.Table) -> pa.Table:
    from sluice.models.online import OnlineAnomalyModel

    if isinstance(model, OnlineAnomalyModel):
        return model.apply(table, learn=False)
    return model.score(table)


def _predictions(table: pa.Table, name: str) -> list[dict[str, Any]]:
    columns = {
        suffix: f"{name}_{suffix}"
        for suffix in _OUTPUTS
        if f"{name}_{suffix}" in table.column_names
    }
    picked = table.select(list(columns.values())).rename_columns(list(columns))
    return picked.to_pylist()


_default: Predictor | None = None


def predict(
    data: Any, model: str | None = None, settings: Settings | None = None
) -> dict[str, Any]:
    """Module-level convenience over a shared ``Predictor``."""
    global _default
    if settings is not None:
        return Predictor(settings).predict(data, model)
    if _default is None:
        _default = Predictor()
    return _default.predict(data, model)
