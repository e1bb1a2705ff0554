"""Incremental checkpoints of ``online_anomaly``: a snapshot, then deltas of the keys an
epoch changed, replayed exactly on restore; eviction of keys that never warmed up."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from sluice.config.loader import pipeline_from_text
from sluice.config.models import ModelConfig
from sluice.core.settings import Settings
from sluice.models.base import ModelContext, build_model
from sluice.models.online import OnlineAnomalyModel
from sluice.models.online_anomaly import OnlineAnomalyConfig, OnlineAnomalyDetector
from sluice.models.state_log import StateLog
from sluice.runners.local import LocalRunner
from sluice.storage.checkpoints import CheckpointStore, StateDelta, read_operator_states
from sluice.storage.db import get_engine
from sluice.storage.lake_tables import read_lake_table


def _batch(rng: np.random.Generator, n: int, keys: int) -> tuple[np.ndarray, np.ndarray]:
    return rng.integers(0, keys, n).astype(str).astype(object), rng.normal(size=(n, 2))


def test_snapshot_plus_deltas_restore_the_live_state_exactly() -> None:
    """With keys evicted and slots reused in between (max_keys below the keys seen)."""
    rng = np.random.default_rng(0)
    config = OnlineAnomalyConfig(features=["a", "b"], key="k", max_keys=150)
    live = OnlineAnomalyDetector(config)
    deltas = []
    for i in range(12):
        live.score_learn(*_batch(rng, 400, 100 if i < 4 else 250))
        if i == 2:
            snapshot, deltas = live.get_state(), []
        else:
            deltas.append(live.get_state(dirty=True))
        live.keys.clean()
    assert live.keys.evicted > 0
    restored = OnlineAnomalyDetector(config)
    for blob in (snapshot, *deltas):
        restored.set_state(blob)
    assert restored.keys.index == live.keys.index
    assert restored.keys.free == live.keys.free
    np.testing.assert_array_equal(restored.keys.table, live.keys.table)
    keys, X = _batch(rng, 2000, 250)
    want, got = live.score_learn(keys, X), restored.score_learn(keys, X)
    np.testing.assert_array_equal(got.score, want.score)
    np.testing.assert_array_equal(got.anomaly, want.anomaly)


def test_a_delta_holds_only_the_keys_changed() -> None:
    rng = np.random.default_rng(1)
    detector = OnlineAnomalyDetector(OnlineAnomalyConfig(features=["a", "b"], key="k"))
    detector.score_learn(*_batch(rng, 5000, 1000))
    full = detector.get_state()
    detector.keys.clean()
    detector.score_learn(np.array(["3", "7"], dtype=object), rng.normal(size=(2, 2)))
    assert detector.keys.dirty_count == 2
    assert len(detector.get_state(dirty=True)) < len(full) / 100


def test_state_log_compacts_once_the_deltas_add_up_to_a_snapshot() -> None:
    log = StateLog()
    kinds = []
    for _ in range(7):
        state = log.next(lambda: b"s" * 100, lambda: b"d" * 30)
        kinds.append("delta" if isinstance(state, StateDelta) else "snapshot")
        log.committed()
    assert kinds == ["snapshot", "delta", "delta", "delta", "delta", "snapshot", "delta"]


def test_an_uncommitted_decision_is_not_taken_into_account() -> None:
    log = StateLog()
    log.next(lambda: b"s" * 100, lambda: b"d")  # a snapshot whose checkpoint failed
    assert isinstance(log.next(lambda: b"s" * 100, lambda: b"d"), bytes)  # still a snapshot


def test_checkpoint_store_appends_deltas_and_a_snapshot_clears_them(settings: Settings) -> None:
    store = CheckpointStore(get_engine(str(settings.metadata_url)))
    store.commit("p", 1, {}, {"model:m": b"snap1", "transform[0]": b"t1"})
    store.commit("p", 2, {}, {"model:m": StateDelta(b"d2"), "transform[0]": b"t2"})
    store.commit("p", 3, {}, {"model:m": StateDelta(b"d3"), "transform[0]": b"t3"})
    loaded = store.load("p")
    assert loaded.states == {"model:m": b"snap1", "transform[0]": b"t3"}
    assert loaded.deltas == {"model:m": [b"d2", b"d3"]}
    with store.engine.connect() as conn:
        assert read_operator_states(conn, ["p", "q"], "model:m") == {
            "p": (b"snap1", [b"d2", b"d3"])
        }
    store.commit("p", 4, {}, {"model:m": b"snap4"})
    assert store.load("p").deltas == {}
    store.reset("p")
    assert store.load("p").epoch == 0
    store.close()


def _model(settings: Settings, max_keys: int) -> OnlineAnomalyModel:
    config = ModelConfig.model_validate(
        {
            "name": "det",
            "type": "online_anomaly",
            "features": ["x"],
            "key": "k",
            "max_keys": max_keys,
        }
    )
    model = build_model(config, ModelContext("p", settings))
    assert isinstance(model, OnlineAnomalyModel)
    return model


def test_keys_evicted_before_warming_up_are_counted_and_warned_once(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    model = _model(settings, max_keys=10)
    with caplog.at_level(logging.WARNING, logger="sluice.models"):
        for start in (0, 100, 200):  # every key seen once: all evicted cold
            keys = [str(k) for k in range(start, start + 20)]
            model.score(pa.table({"k": keys, "x": np.arange(20.0)}))
    assert model.lost_keys() == 50
    assert model.describe()["evicted_unwarmed_keys"] == 50
    warnings = [r for r in caplog.records if "raise max_keys" in r.getMessage()]
    assert len(warnings) == 1


PIPELINE = """\
name: inc
source: {{type: file, path: "{data}", format: json}}
schema: {{k: string, x: double}}
batch: {{max_rows: 300}}
models:
  - {{name: det, type: online_anomaly, features: [x], key: k, max_keys: 100}}
sinks:
  - {{type: lake, table: scored, partition_by: none}}
"""


def test_a_run_resumed_from_deltas_scores_as_a_run_never_stopped(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    # 120 keys (more than max_keys) in the first epochs, then 10 hot keys: small deltas
    keys = np.concatenate([rng.integers(0, 120, 600), rng.integers(0, 10, 2400)])
    lines = [
        f'{{"k": "k{k}", "x": {x:.6f}}}' for k, x in zip(keys, rng.normal(size=3000), strict=True)
    ]
    data = tmp_path / "in.jsonl"
    data.write_text("\n".join(lines) + "\n")
    pipeline = pipeline_from_text(PIPELINE.format(data=data))

    def run(home: Path, epochs: int | None) -> None:
        LocalRunner(pipeline, Settings(home=home), until_idle=True).run(max_epochs=epochs)

    run(tmp_path / "clean", None)
    store = CheckpointStore(get_engine(str(Settings(home=tmp_path / "resumed").metadata_url)))
    replayed = 0
    for epochs in (3, 2, 1, None):
        replayed += len(store.load("inc").deltas.get("model:det", []))
        run(tmp_path / "resumed", epochs)
    assert replayed > 0  # restores replayed deltas
    assert store.load("inc").epoch == 10
    scores = [
        read_lake_table(Settings(home=home), "scored").sort_by("x").column("det_score").to_numpy()
        for home in (tmp_path / "clean", tmp_path / "resumed")
    ]
    np.testing.assert_array_equal(scores[0], scores[1])


def test_a_run_counts_keys_lost_before_warming_up(tmp_path: Path) -> None:
    lines = [f'{{"k": "k{i}", "x": {i % 7}.5}}' for i in range(600)]  # 600 keys, once each
    data = tmp_path / "in.jsonl"
    data.write_text("\n".join(lines) + "\n")
    pipeline = pipeline_from_text(PIPELINE.format(data=data))
    stats = LocalRunner(pipeline, Settings(home=tmp_path / "home"), until_idle=True).run()
    assert stats.extra["keys_lost_unwarmed"] == 500  # max_keys 100
