"""A running pipeline picks up a newly promoted model version at its next checkpoint."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import joblib
import numpy as np
from sklearn.linear_model import LogisticRegression

from sluice.config.models import Pipeline
from sluice.models.registry import ModelRegistry
from sluice.runners.local import LocalRunner
from sluice.storage.query import QueryEngine

FEATURES = ["temperature", "pressure", "vibration"]


def _fit(labels_flipped: bool, path: Path) -> Path:
    rng = np.random.default_rng(0)
    X = rng.normal([70, 100, 1], [5, 5, 0.3], size=(500, 3))
    y = np.where(X[:, 0] > 70, "hot", "cold")
    if labels_flipped:
        y = np.where(y == "hot", "cold", "hot")
    joblib.dump(LogisticRegression(max_iter=500).fit(X, y), path)
    return path


def test_promote_and_rollback_reach_a_running_pipeline(settings, tmp_path: Path) -> None:
    registry = ModelRegistry(settings)
    registry.register(
        "heat",
        "sklearn",
        _fit(False, tmp_path / "v1.joblib"),
        features=FEATURES,
        stage="production",
    )
    v2 = registry.register("heat", "sklearn", _fit(True, tmp_path / "v2.joblib"), features=FEATURES)
    pipeline = Pipeline.model_validate(
        {
            "name": "reload",
            "source": {
                "type": "generator",
                "events": None,
                "devices": 5,
                "rate": 20_000,
                "labels": False,
            },
            "batch": {"max_rows": 2_000, "max_latency": "100ms"},
            "models": [{"name": "heat", "type": "sklearn", "features": FEATURES}],
            "sinks": [{"type": "lake", "table": "scored"}],
        }
    )
    runner = LocalRunner(pipeline, settings)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        _wait_for_epoch(runner, 3)
        registry.promote("heat", v2.version)
        promoted = _emitted(runner)
        _wait_for_epoch(runner, runner.epoch + 4)
        registry.rollback("heat")
        rolled_back = _emitted(runner)
        _wait_for_epoch(runner, runner.epoch + 4)
    finally:
        runner.stop()
        thread.join(timeout=60)
    slack = 3 * 2_000  # the version changes at the next checkpoint, not mid-epoch

    def agreement(lo: int, hi: int) -> float:
        """Share of rows in [lo, hi) (generator row index) labelled as v1 would."""
        sql = (
            "with r as (select heat_label, temperature, "
            "(epoch(ts) - epoch(min(ts) over ())) * 5 as row from scored) "
            "select avg(((heat_label = 'hot') = (temperature > 70))::int) from r "
            f"where row >= {lo} and row < {hi}"
        )
        return float(QueryEngine(settings).query(sql).column(0)[0].as_py())

    assert agreement(0, promoted) > 0.9  # v1
    assert agreement(promoted + slack, rolled_back) < 0.1  # v2, picked up without restart
    assert agreement(rolled_back + slack, 10**9) > 0.9  # v1 again after the rollback


def _emitted(runner: LocalRunner) -> int:
    return int((runner.position or {}).get("emitted", 0))


def _wait_for_epoch(runner: LocalRunner, epoch: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while runner.epoch < epoch:
        assert time.monotonic() < deadline, f"no epoch {epoch} within {timeout}s"
        time.sleep(0.05)
