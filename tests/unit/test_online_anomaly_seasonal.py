"""The seasonal detector of online_anomaly on seeded periodic data."""

from __future__ import annotations

import numpy as np
import pytest

from sluice.core.errors import StateError
from sluice.models.detectors.seasonal import detect
from sluice.models.online_anomaly import OnlineAnomalyConfig, OnlineAnomalyDetector, ScoreResult

PERIOD = 48
START = 40 * PERIOD  # an upward zero crossing of the sine


def _seasonal(n: int = 45 * PERIOD, seed: int = 11) -> np.ndarray:
    """A sine of period 48 with noise; one cycle is played upside down (off-season only)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    x = 10.0 + 5.0 * np.sin(2 * np.pi * t / PERIOD) + rng.normal(0.0, 0.3, n)
    x[START : START + PERIOD] = 20.0 - x[START : START + PERIOD]
    return x


def _run(x: np.ndarray, **options: object) -> ScoreResult:
    config = OnlineAnomalyConfig(features=["cpu"], **options)  # type: ignore[arg-type]
    det = OnlineAnomalyDetector(config)
    parts = [det.score_learn(None, x[i : i + 500, None]) for i in range(0, len(x), 500)]
    return ScoreResult(
        *(np.concatenate([getattr(p, f) for p in parts]) for f in ("score", "anomaly", "reason"))
    )


def test_period_is_found_from_autocorrelation() -> None:
    x = _seasonal()[:640]
    period, scale = detect(x[None, :])
    assert period[0] == PERIOD
    assert 0.1 < scale[0] < 1.0  # about the noise (0.3), far below the 5.0 amplitude


def test_off_season_value_is_flagged_and_explained() -> None:
    x = _seasonal()
    inside = slice(START, START + PERIOD)
    assert x[inside].min() > x[:START].min() and x[inside].max() < x[:START].max()
    seasonal = _run(x)
    assert seasonal.anomaly[inside].any()
    top = START + int(np.argmax(seasonal.score[inside]))
    assert seasonal.score[top] > seasonal.score[PERIOD * 20 : START].max()
    assert "below its usual level at this point of its 48-event cycle" in seasonal.reason[top]
    assert not seasonal.anomaly[START + 2 * PERIOD :].any()  # no echo a cycle later
    plain = _run(x, season_window=0)
    assert not any("recent level" in r for r in plain.reason[inside])
    assert plain.score[inside].max() < seasonal.score[top]


def test_no_period_in_noise_or_a_random_walk() -> None:
    rng = np.random.default_rng(5)
    noise = rng.normal(size=640)
    walk = np.cumsum(rng.normal(size=640))
    period, _ = detect(np.stack([noise, walk]))
    assert (period == 0).all()


def test_batch_split_and_state_round_trip_with_an_active_season() -> None:
    x = _seasonal()
    keys = np.where(np.arange(len(x)) % 3 == 0, "a", "b").astype(object)
    X = np.column_stack([x, x[::-1]])
    config = OnlineAnomalyConfig(features=["cpu", "mem"], key="host")
    whole = OnlineAnomalyDetector(config).score_learn(keys, X)
    split = OnlineAnomalyDetector(config)
    first = split.score_learn(keys[:1234], X[:1234])
    resumed = OnlineAnomalyDetector(config)
    resumed.set_state(split.get_state())
    rest = resumed.score_learn(keys[1234:], X[1234:])
    got = np.concatenate([first.score, rest.score])
    np.testing.assert_allclose(got, whole.score, rtol=1e-9, atol=1e-9)
    assert any("cycle" in r for r in whole.reason)


def test_state_from_another_season_window_is_rejected() -> None:
    det = OnlineAnomalyDetector(OnlineAnomalyConfig(features=["cpu"], season_window=64))
    det.score_learn(None, _seasonal()[:200, None])
    other = OnlineAnomalyDetector(OnlineAnomalyConfig(features=["cpu"]))
    with pytest.raises(StateError, match="season_window"):
        other.set_state(det.get_state())
