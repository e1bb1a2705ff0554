"""``sluice.predict``: score a string, a record or a list of records with a model.

Defaults: a string goes to the production text classifier; a record goes to the first
online anomaly model (by name) that has learned state (scored from its pipeline's latest
checkpoint, without learning; for a Kafka pipeline, from the checkpoints of all its partition
tasks, each record by the task that learned its key), else to the first production model of
another kind. ``model=NAME`` picks one.

A model is loaded on its first request and kept. At most every ``refresh_seconds`` a
background thread takes one cheap look at the metadata database (see
:mod:`sluice.models.catalog`: no model bytes) and loads again only the models that changed
(a promoted or rolled-back version, a newer online checkpoint), swapping each in when it is
ready; requests meanwhile go on with the model they have, without waiting for the database.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from sluice.config.models import ModelConfig
from sluice.core.errors import ModelError, NotFoundError, SluiceError
from sluice.core.settings import Settings
from sluice.models.base import Model, ModelContext, create_model
from sluice.models.catalog import Catalog, ModelSource
from sluice.models.online import OnlineAnomalyModel
from sluice.models.records import score_records
from sluice.models.registry import ModelRegistry, OnlineModelIndex, OnlineModelInfo
from sluice.storage.checkpoints import read_operator_states
from sluice.storage.db import get_engine

log = logging.getLogger("sluice.predict")
_OUTPUTS = ("label", "proba", "score", "anomaly", "reason")
# (model, its pipeline's steps before it, records) -> (records after the steps, kept indexes)
Prepare = Callable[
    [str, list[dict[str, Any]], list[dict[str, Any]]], tuple[list[dict[str, Any]], list[int]]
]
FILTERED: dict[str, Any] = {"filtered": True}


@dataclass(frozen=True)
class _Loaded:
    """A loaded model and the source it was loaded from."""

    model: Model
    source: ModelSource


class Predictor:
    """Keeps loaded models, refreshes changed ones in the background, predicts."""

    def __init__(
        self,
        settings: Settings | None = None,
        refresh_seconds: float = 2.0,
        *,
        prepare: Prepare | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.prepare = prepare
        self.refresh_seconds = refresh_seconds
        self.registry = ModelRegistry(self.settings)
        self.online = OnlineModelIndex(self.settings)
        self.engine = get_engine(str(self.settings.metadata_url))
        self._catalog: Catalog | None = None
        self._checked_at = 0.0
        self._loaded: dict[str, _Loaded] = {}
        self._lock = threading.RLock()
        self._refresher: threading.Thread | None = None

    def _read_catalog(self) -> Catalog:
        catalog = Catalog.read(self.engine, self.registry, self.online)
        with self._lock:
            self._catalog, self._checked_at = catalog, time.monotonic()
        return catalog

    def _current_catalog(self) -> Catalog:
        """The catalog in hand (read now only the first time); starts a refresh when due."""
        with self._lock:
            catalog = self._catalog
            if catalog is None:
                return self._read_catalog()
            if time.monotonic() - self._checked_at >= self.refresh_seconds:
                self._refresh_in_background()
            return catalog

    def _refresh_in_background(self) -> None:
        if self._refresher is not None and self._refresher.is_alive():
            return
        self._checked_at = time.monotonic()
        self._refresher = threading.Thread(
            target=self._refresh_logged, name="sluice-predict-refresh", daemon=True
        )
        self._refresher.start()

    def _refresh_logged(self) -> None:
        try:
            self.refresh()
        except Exception as exc:  # keep serving the models in hand
            log.warning("could not refresh the models for predict: %s", exc)

    def refresh(self) -> None:
        """Look at the metadata database now and load again every kept model that changed."""
        catalog = self._read_catalog()
        for name, kept in list(self._loaded.items()):
            source = catalog.source(name)
            if source is None or source.marker == kept.source.marker:
                continue
            loaded = _Loaded(self._build(source), source)
            with self._lock:
                self._loaded[name] = loaded

    def wait_for_refresh(self, timeout: float | None = None) -> None:
        """Wait until a background refresh in flight (if any) has finished."""
        refresher = self._refresher
        if refresher is not None:
            refresher.join(timeout)

    def default_model(self, text: bool) -> str:
        """The model used when the request names none."""
        found = self._current_catalog().default_name(text)
        if found is None:
            kind = "text classifier" if text else "model for records"
            raise NotFoundError(
                f"no {kind} is available; run `sluice demo` or train one with `sluice models train`"
            )
        return found

    def _load(self, name: str) -> _Loaded:
        kept = self._loaded.get(name)
        catalog = self._current_catalog()
        if kept is not None:
            return kept
        source = catalog.source(name)
        if source is None:  # maybe registered since the last look
            source = self._read_catalog().source(name)
        if source is None:
            known = self.model_names()
            raise NotFoundError(f"no model named {name!r}; available: {', '.join(known) or 'none'}")
        loaded = _Loaded(self._build(source), source)
        self._loaded[name] = loaded
        return loaded

    def model_names(self) -> list[str]:
        """Every model predict can use (registry names and online models), sorted."""
        catalog = self._read_catalog()
        return sorted({v.name for v in catalog.versions} | {m.name for m in catalog.online})

    def _build(self, source: ModelSource) -> Model:
        if source.online is not None:
            return self._build_online(source.online, source.streams)
        version = source.version
        assert version is not None
        config = ModelConfig.model_validate(
            {
                "name": version.name,
                "type": version.format,
                "features": version.features,
                "registry": version.name,
                "version": version.version,
            }
        )
        return create_model(config, ModelContext("predict", self.settings))

    def _build_online(self, info: OnlineModelInfo, streams: tuple[str, ...]) -> Model:
        config = ModelConfig(name=info.name, type=info.type, features=info.features, key=info.key)
        model = create_model(config, ModelContext(info.pipeline, self.settings))
        if not streams:
            return model
        with self.engine.connect() as conn:
            found = read_operator_states(conn, list(streams), f"model:{info.name}")
        states = [found[s] for s in sorted(found) if found[s][0]]
        if len(states) > 1 and isinstance(model, OnlineAnomalyModel):
            model.restore_partitions(states)
        elif states:
            if len(states) > 1:
                log.warning("model %r: scoring with the state of %s only", info.name, streams[0])
            model.restore(states[0][0])
            model.restore_deltas(states[0][1])
        if isinstance(model, OnlineAnomalyModel):
            model.detector.prepare()  # here, in the refresh thread, rather than in a request
        return model

    def predict(self, data: Any, model: str | None = None) -> dict[str, Any]:
        """Score ``data`` (a string, a record, or a list of either)."""
        records = data if isinstance(data, list) else [data]
        if not records:
            raise ModelError("nothing to predict: 'data' is empty")
        texts = all(isinstance(r, str) for r in records)
        if not texts and not all(isinstance(r, dict) for r in records):
            raise ModelError("'data' must be a string, an object, or a list of strings or objects")
        name = model or self.default_model(text=texts)
        with self._lock:  # models (plugins too) need not be thread-safe
            loaded = self._load(name)
            try:
                predictions = self._score(name, loaded, records, texts)
            except SluiceError as exc:  # a record the model (or the steps before it) cannot take
                raise ModelError(f"model {name!r}: {exc}") from None
        result: dict[str, Any] = {"model": name, "version": loaded.source.number}
        if isinstance(data, list):
            result["predictions"] = predictions
        else:
            result["prediction"] = predictions[0]
        return result

    def _score(
        self, name: str, loaded: _Loaded, records: list[Any], texts: bool
    ) -> list[dict[str, Any]]:
        total = len(records)
        kept = list(range(total))
        online = loaded.source.online
        steps = online.prepare if online is not None else []
        if not texts and steps and self.prepare is not None and not _has_features(records, online):
            records, kept = self.prepare(name, steps, records)
        predictions = score_records(loaded.model, records) if records and not texts else None
        if predictions is None:
            predictions = (
                _predictions(
                    _score_only(loaded.model, _to_table(records, loaded.model, texts)), name
                )
                if records
                else []
            )
        if len(kept) == total:
            return predictions
        out = [dict(FILTERED) for _ in range(total)]
        for index, prediction in zip(kept, predictions, strict=True):
            out[index] = prediction
        return out


def _has_features(records: list[Any], info: OnlineModelInfo | None) -> bool:
    """True when every record already holds the model's features (its input, not a raw record)."""
    features = info.features if info is not None else []
    return bool(features) and all(f in r for r in records for f in features)


def _to_table(records: list[Any], model: Model, texts: bool) -> pa.Table:
    if texts:
        column = getattr(model, "text_column", "text")
        return pa.table({column: pa.array(records, pa.string())})
    try:
        return pa.Table.from_pylist(records)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ModelError(f"records do not form a table: {exc}") from None


def _score_only(model: Model, table: pa.Table) -> pa.Table:
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
