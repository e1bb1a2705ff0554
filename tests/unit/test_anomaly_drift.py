"""The slow-drift detector of ``online_anomaly`` on seeded data."""

from __future__ import annotations

import numpy as np

from sluice.models.detectors.drift import DRIFT_STATE, DriftParams, drift_scores
from sluice.models.detectors.layout import split
from sluice.models.online_anomaly import OnlineAnomalyConfig, OnlineAnomalyDetector

DRIFT_START = 5.0  # a drift statistic this large is a clear drift


def _stat(x: np.ndarray, level: np.ndarray) -> np.ndarray:
    (segs,) = split(np.zeros(len(x), dtype=np.int64), len(x))
    init = {k: np.zeros((1, 1)) for k in DRIFT_STATE}
    z, clear, _, _ = drift_scores(
        x[None, :],
        np.zeros((1, 1)),
        np.ones((1, len(x))),
        level[None, :],
        np.ones((1, len(x)), dtype=bool),
        segs,
        init,
        DriftParams(),
    )
    return np.where(clear, z, 0.0)[0]


def test_slow_drift_is_flagged_early() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(50.0, 1.0, size=(2000, 1))
    ramp = np.arange(1, 101) * 8.0 / 100  # 0 -> 8 sigma over 100 events
    x[1500:1600, 0] += ramp
    det = OnlineAnomalyDetector(OnlineAnomalyConfig(features=["temperature"]))
    res = det.score_learn(None, x)
    labelled = np.arange(1500, 1600)[ramp >= 3.0]  # as the generator labels drifts
    assert res.anomaly[labelled].mean() >= 0.9
    assert res.anomaly[300:1500].mean() < 0.01
    assert res.score[labelled].min() > np.quantile(res.score[300:1500], 0.99)


def test_step_regime_change_is_not_a_drift_after_the_horizon() -> None:
    rng = np.random.default_rng(4)
    x = 50.0 + rng.normal(size=1500)
    x[1000:] += 8.0
    level = np.where(np.arange(1500) >= 1000, 3.0, 0.0)  # recent values stay shifted
    z = _stat(x, level)
    horizon = 3 * DriftParams().slow
    assert np.abs(z[1000:1010]).max() >= DRIFT_START  # the step itself opens the gap
    assert np.abs(z[1000 + horizon :]).max() < DRIFT_START  # adapted: no longer a drift
    assert np.abs(z[100:1000]).max() < DRIFT_START


def test_return_after_a_drift_is_not_a_drift() -> None:
    rng = np.random.default_rng(5)
    x = 50.0 + rng.normal(size=1400)
    x[1000:1100] += np.arange(1, 101) * 8.0 / 100  # drifts up to 8 sigma, then snaps back
    # the recent values stand above the long-horizon mean, then below it (it was pulled along)
    level = np.zeros(1400)
    level[1040:1100], level[1100:1250] = 3.0, -2.0
    z = _stat(x, level)
    assert z[1060:1100].min() >= DRIFT_START  # the drift itself
    assert np.abs(z[1100:]).max() < 3.0  # the way back is not a drift down


def test_drift_against_a_slow_swing_is_flagged() -> None:
    rng = np.random.default_rng(6)
    t = np.arange(4000)
    # a swing of 3 sigma over 1440 events widens the long-horizon deviation
    x = 70.0 + 3.0 * np.sin(2 * np.pi * t / 1440) + rng.normal(size=4000)
    ramp = np.arange(1, 101) * 8.0 / 100
    x[3000:3100] -= ramp
    res = OnlineAnomalyDetector(OnlineAnomalyConfig(features=["temperature"])).score_learn(
        None, x[:, None]
    )
    assert res.anomaly[np.arange(3000, 3100)[ramp >= 3.0]].mean() >= 0.4
    assert not res.anomaly[500:3000].any()
    # the snap back may echo for an event (the level learned part of the drift), no more
    assert res.anomaly[3105:3400].sum() <= 1
