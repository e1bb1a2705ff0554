"""Predict with an online model of a Kafka pipeline: one saved state per partition task, and
each record scored by the state that learned its key."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from sluice.config.models import ModelConfig
from sluice.core.errors import ModelError
from sluice.models.base import ModelContext, create_model
from sluice.models.online import OnlineAnomalyModel
from sluice.models.predict import Predictor
from sluice.models.registry import OnlineModelIndex, OnlineModelInfo
from sluice.storage.checkpoints import CheckpointStore
from sluice.storage.db import get_engine

FEATURES = ["temperature"]
# partition 0 learned devices a*, running at 20 degrees; partition 1 devices b*, at 80
LEVELS = {0: 20.0, 1: 80.0}


def _partition_model(settings, partition: int, events: int) -> OnlineAnomalyModel:
    model = create_model(
        ModelConfig(name="temp", type="online_anomaly", features=FEATURES, key="device_id"),
        ModelContext("plant", settings),
    )
    assert isinstance(model, OnlineAnomalyModel)
    rng = np.random.default_rng(partition)
    prefix = "ab"[partition]
    model.score(
        pa.table(
            {
                "device_id": [f"{prefix}{i % 4}" for i in range(events)],
                "temperature": rng.normal(LEVELS[partition], 0.5, events),
            }
        )
    )
    return model


def _save(settings, partition: int, model: OnlineAnomalyModel, epoch: int) -> None:
    store = CheckpointStore(get_engine(str(settings.metadata_url)))
    stream = f"plant#telemetry/{partition}"
    store.commit(stream, epoch, {"offset": epoch}, {"model:temp": model.state()})


@pytest.fixture
def partitions(settings) -> dict[int, OnlineAnomalyModel]:
    # each key past the 200 events a key needs before it may alert
    models = {0: _partition_model(settings, 0, 1000), 1: _partition_model(settings, 1, 1200)}
    _save(settings, 0, models[0], epoch=3)
    _save(settings, 1, models[1], epoch=7)
    OnlineModelIndex(settings).record(
        OnlineModelInfo("temp", "plant", "online_anomaly", FEATURES, "device_id")
    )
    return models


def test_each_record_is_scored_by_the_partition_that_learned_its_key(settings, partitions):
    records = [
        {"device_id": "a1", "temperature": 20.2},
        {"device_id": "b2", "temperature": 80.1},
        {"device_id": "a3", "temperature": 80.0},  # far off a3's level (20)
        {"device_id": "b0", "temperature": 20.0},  # far off b0's level (80)
    ]
    answer = Predictor(settings).predict(records)
    assert answer["model"] == "temp" and answer["version"] == 7
    got = answer["predictions"]
    assert [p["anomaly"] for p in got] == [False, False, True, True]
    for record, prediction in zip(records, got, strict=True):
        own = partitions[0 if record["device_id"].startswith("a") else 1]
        keys = np.array([record["device_id"]], dtype=object)
        expected = own.detector.score(keys, np.array([[record["temperature"]]]))
        assert prediction["score"] == pytest.approx(float(expected.score[0]))
        assert prediction["reason"] == expected.reason[0]


def test_a_key_no_partition_has_seen_goes_to_the_busiest(settings, partitions):
    model = Predictor(settings)._load("temp").model
    assert isinstance(model, OnlineAnomalyModel)
    router = model.detector
    keys = np.array(["zz", "a0", "b0"], dtype=object)
    assert router.owners(keys, 3).tolist() == [1, 0, 1]  # partition 1 saw 1200 events


def test_partition_states_are_read_only(settings, partitions):
    model = Predictor(settings)._load("temp").model
    assert isinstance(model, OnlineAnomalyModel)
    table = pa.table({"device_id": ["a1"], "temperature": [20.0]})
    with pytest.raises(ModelError, match="cannot learn"):
        model.score(table)
    with pytest.raises(ModelError, match="several partitions"):
        model.state()


def test_a_newer_partition_checkpoint_is_picked_up(settings, partitions):
    predictor = Predictor(settings, refresh_seconds=0)
    assert predictor.predict({"device_id": "a1", "temperature": 20.0})["version"] == 7
    _save(settings, 0, _partition_model(settings, 0, 600), epoch=9)
    predictor.predict({"device_id": "a1", "temperature": 20.0})  # starts the refresh
    predictor.wait_for_refresh(timeout=60)
    assert predictor.predict({"device_id": "a1", "temperature": 20.0})["version"] == 9
