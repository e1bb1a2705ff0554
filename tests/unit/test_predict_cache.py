"""``Predictor`` caches loaded models yet picks up promotions and newer online checkpoints;
its numpy fast path answers exactly as scoring an Arrow table of the same records does."""

from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
import pyarrow as pa
import pytest
from sklearn.linear_model import LogisticRegression
from sqlalchemy import create_engine

from sluice.config.models import ModelConfig
from sluice.core.errors import ModelError, NotFoundError
from sluice.models.base import Model, ModelContext, create_model
from sluice.models.predict import Predictor, _predictions, _score_only
from sluice.models.records import score_records
from sluice.models.registry import ModelRegistry, OnlineModelIndex, OnlineModelInfo
from sluice.storage.checkpoints import CheckpointStore
from sluice.storage.db import get_engine

FEATURES = ["temperature", "pressure"]
HOT = {"device_id": "d1", "temperature": 80.0, "pressure": 100.0}
RECORDS = [
    HOT,
    {"device_id": "d2", "temperature": 60.0, "pressure": 101.0},
    {"device_id": "d1", "temperature": None, "pressure": 99.0, "extra": "ignored"},
    {"device_id": "d9", "temperature": 71.0, "pressure": 100.5},
]


def _fit(path: Path, flipped: bool = False) -> Path:
    rng = np.random.default_rng(0)
    X = rng.normal([70, 100], [5, 1], size=(400, 2))
    y = np.where((X[:, 0] > 70) != flipped, "hot", "cold")
    joblib.dump(LogisticRegression(max_iter=500).fit(X, y), path)
    return path


def _online(settings, batches: int) -> Model:
    """An online model that learned ``batches`` batches, saved as its pipeline's state."""
    model = create_model(
        ModelConfig(name="temp", type="online_anomaly", features=FEATURES, key="device_id"),
        ModelContext("plant", settings),
    )
    rng = np.random.default_rng(batches)
    for _ in range(batches):
        n = 200
        model.score(
            pa.table(
                {
                    "device_id": [f"d{i % 3}" for i in range(n)],
                    "temperature": rng.normal(70, 2, n),
                    "pressure": rng.normal(100, 1, n),
                }
            )
        )
    store = CheckpointStore(get_engine(str(settings.metadata_url)))
    store.commit("plant", batches, {"offset": batches}, {"model:temp": model.state()})
    OnlineModelIndex(settings).record(
        OnlineModelInfo("temp", "plant", "online_anomaly", FEATURES, "device_id")
    )
    return model


def _table_path(model: Model, records: list[dict]) -> list[dict]:
    return _predictions(_score_only(model, pa.Table.from_pylist(records)), model.name)


def _after_refresh(predictor: Predictor, record: dict | list, model: str | None = None) -> dict:
    """The answer once a background refresh started by a request has finished."""
    predictor.predict(record, model)  # due (refresh_seconds=0): starts the refresh
    predictor.wait_for_refresh(timeout=60)
    return predictor.predict(record, model)


def test_promotion_and_rollback_reach_a_serving_predictor(settings, tmp_path: Path) -> None:
    registry = ModelRegistry(settings)
    registry.register("heat", "sklearn", _fit(tmp_path / "a.joblib"), features=FEATURES)
    registry.promote("heat", 1)
    predictor = Predictor(settings, refresh_seconds=0)
    first = predictor.predict(HOT, model="heat")
    assert (first["version"], first["prediction"]["label"]) == (1, "hot")

    flipped = _fit(tmp_path / "b.joblib", flipped=True)
    registry.register("heat", "sklearn", flipped, features=FEATURES, stage="production")
    promoted = _after_refresh(predictor, HOT, "heat")
    assert (promoted["version"], promoted["prediction"]["label"]) == (2, "cold")

    registry.rollback("heat")
    predictor.refresh()
    assert predictor.predict(HOT, model="heat")["version"] == 1
    predictor.wait_for_refresh(timeout=60)


def test_an_unchanged_model_is_not_loaded_again(settings, tmp_path: Path) -> None:
    ModelRegistry(settings).register(
        "heat", "sklearn", _fit(tmp_path / "a.joblib"), features=FEATURES, stage="production"
    )
    predictor = Predictor(settings, refresh_seconds=0)
    predictor.predict(HOT, model="heat")
    loaded = predictor._loaded["heat"].model
    _after_refresh(predictor, HOT, "heat")
    predictor.refresh()
    assert predictor._loaded["heat"].model is loaded
    predictor.wait_for_refresh(timeout=60)


def test_within_the_refresh_interval_the_kept_version_answers(settings, tmp_path: Path) -> None:
    registry = ModelRegistry(settings)
    registry.register(
        "heat", "sklearn", _fit(tmp_path / "a.joblib"), features=FEATURES, stage="production"
    )
    predictor = Predictor(settings, refresh_seconds=3600)
    assert predictor.predict(HOT, model="heat")["version"] == 1
    registry.register(
        "heat", "sklearn", _fit(tmp_path / "b.joblib", True), features=FEATURES, stage="production"
    )
    assert predictor.predict(HOT, model="heat")["version"] == 1
    assert predictor._refresher is None  # not due: no look at the database at all
    predictor.refresh_seconds = 0
    assert _after_refresh(predictor, HOT, "heat")["version"] == 2
    predictor.wait_for_refresh(timeout=60)


def test_a_model_registered_after_the_first_look_is_found(settings, tmp_path: Path) -> None:
    predictor = Predictor(settings, refresh_seconds=3600)
    with pytest.raises(NotFoundError, match="no model named 'heat'"):
        predictor.predict(HOT, model="heat")
    ModelRegistry(settings).register(
        "heat", "sklearn", _fit(tmp_path / "a.joblib"), features=FEATURES, stage="production"
    )
    assert predictor.predict(HOT, model="heat")["model"] == "heat"


def test_records_default_to_the_online_model_and_follow_its_checkpoints(settings) -> None:
    _online(settings, batches=3)
    predictor = Predictor(settings, refresh_seconds=0)
    first = predictor.predict(HOT)
    assert first["model"] == "temp" and first["version"] == 3
    assert set(first["prediction"]) == {"score", "anomaly", "reason"}
    newer = _online(settings, batches=5)
    again = _after_refresh(predictor, RECORDS)
    assert again["version"] == 5
    assert again["predictions"] == _table_path(newer, RECORDS)
    predictor.wait_for_refresh(timeout=60)


def test_a_failed_refresh_keeps_the_models_in_hand(settings, tmp_path: Path, caplog) -> None:
    ModelRegistry(settings).register(
        "heat", "sklearn", _fit(tmp_path / "a.joblib"), features=FEATURES, stage="production"
    )
    predictor = Predictor(settings, refresh_seconds=0)
    predictor.predict(HOT, model="heat")
    predictor.engine.dispose()
    predictor.engine = create_engine("sqlite:///" + str(tmp_path / "missing" / "x.db"))
    assert _after_refresh(predictor, HOT, "heat")["version"] == 1
    predictor.wait_for_refresh(timeout=60)
    assert "could not refresh the models for predict" in caplog.text


def test_fast_path_equals_the_table_path(settings, tmp_path: Path) -> None:
    ModelRegistry(settings).register(
        "heat", "sklearn", _fit(tmp_path / "a.joblib"), features=FEATURES, stage="production"
    )
    heat = create_model(
        ModelConfig.model_validate({"name": "heat", "type": "sklearn", "features": FEATURES}),
        ModelContext("predict", settings),
    )
    online = _online(settings, batches=2)
    for model in (heat, online):
        fast = score_records(model, RECORDS)
        assert fast is not None
        assert fast == _table_path(model, RECORDS)


def test_fast_path_errors_name_the_feature(settings) -> None:
    online = _online(settings, batches=1)
    with pytest.raises(ModelError, match="missing feature column"):
        score_records(online, [{"device_id": "d1", "temperature": 1.0}])
    with pytest.raises(ModelError, match="'pressure' is str, not numeric"):
        score_records(online, [{"device_id": "d1", "temperature": 1.0, "pressure": "high"}])
    with pytest.raises(ModelError, match="missing key column 'device_id'"):
        score_records(online, [{"temperature": 1.0, "pressure": 2.0}])
