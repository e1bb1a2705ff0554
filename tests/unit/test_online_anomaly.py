"""Behaviour of the online_anomaly detector: causality, state, bad input, bounded keys."""

from __future__ import annotations

import numpy as np
import pytest

from sluice.core.errors import ModelError, StateError
from sluice.models.online_anomaly import OnlineAnomalyConfig, OnlineAnomalyDetector


def _detector(**kw: object) -> OnlineAnomalyDetector:
    return OnlineAnomalyDetector(
        OnlineAnomalyConfig(features=["temp_c", "pressure"], key="device_id", **kw)
    )  # type: ignore[arg-type]


def _data(n: int = 3000, keys: int = 5, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    k = np.array([f"d{i}" for i in rng.integers(0, keys, n)], dtype=object)
    X = rng.normal([20.0, 30.0], [1.0, 0.5], size=(n, 2))
    return k, X


def test_spike_is_flagged_with_a_reason() -> None:
    rng = np.random.default_rng(3)
    X = rng.normal(20.0, 1.0, size=(1500, 2))
    X[1200, 0] += 12.0
    det = _detector()
    res = det.score_learn(np.full(1500, "dev-1", dtype=object), X)
    assert res.anomaly[1200]
    assert res.score[1200] == res.score.max()
    assert "temp_c" in res.reason[1200] and "sigma" in res.reason[1200]
    assert res.reason[100] == ""
    assert ((res.score >= 0) & (res.score < 1)).all()


def test_stuck_sensor_reason() -> None:
    rng = np.random.default_rng(4)
    X = rng.normal(20.0, 1.0, size=(1000, 1))
    X[700:760, 0] = X[699, 0]
    det = OnlineAnomalyDetector(OnlineAnomalyConfig(features=["pressure"]))
    res = det.score_learn(None, X)
    flagged = np.flatnonzero(res.anomaly)
    assert any(700 <= i < 760 for i in flagged)
    assert any("stuck at" in res.reason[i] for i in flagged if 700 <= i < 760)


def test_causal_and_batch_split_independent_scores() -> None:
    keys, X = _data()
    whole = _detector().score_learn(keys, X).score
    prefix = _detector().score_learn(keys[:2000], X[:2000]).score
    # equal up to float rounding: other keys' sums share one IIR filter pass
    np.testing.assert_allclose(whole[:2000], prefix, rtol=1e-9, atol=1e-12)
    det = _detector()
    parts = [det.score_learn(keys[i : i + 700], X[i : i + 700]).score for i in range(0, 3000, 700)]
    np.testing.assert_allclose(np.concatenate(parts), whole, rtol=1e-9, atol=1e-9)


def test_deterministic() -> None:
    keys, X = _data()
    a, b = _detector().score_learn(keys, X), _detector().score_learn(keys, X)
    np.testing.assert_array_equal(a.score, b.score)
    np.testing.assert_array_equal(a.reason, b.reason)


def test_state_round_trip_continues_exactly() -> None:
    keys, X = _data()
    straight = _detector()
    straight.score_learn(keys[:1500], X[:1500])
    expected = straight.score_learn(keys[1500:], X[1500:])
    first = _detector()
    first.score_learn(keys[:1500], X[:1500])
    blob = first.get_state()
    resumed = _detector()
    resumed.set_state(blob)
    assert resumed.get_state() == blob
    got = resumed.score_learn(keys[1500:], X[1500:])
    np.testing.assert_array_equal(got.score, expected.score)
    np.testing.assert_array_equal(got.anomaly, expected.anomaly)


def test_set_state_rejects_other_features_and_garbage() -> None:
    det = _detector()
    det.score_learn(*_data(100))
    other = OnlineAnomalyDetector(OnlineAnomalyConfig(features=["x"]))
    with pytest.raises(StateError):
        other.set_state(det.get_state())
    with pytest.raises(StateError):
        det.set_state(b"not a state")


def test_score_only_does_not_change_state() -> None:
    keys, X = _data()
    det = _detector()
    det.score_learn(keys[:2000], X[:2000])
    before = det.get_state()
    peek = det.score(keys[2000:], X[2000:])
    assert det.get_state() == before
    learned = det.score_learn(keys[2000:], X[2000:])
    np.testing.assert_array_equal(peek.score, learned.score)
    after = det.get_state()
    det.score(np.array(["never-seen"], dtype=object), X[:1])
    assert det.get_state() == after


def test_nan_inf_and_missing_features_are_scored() -> None:
    keys, X = _data(1000)
    X[500, 0] = np.nan
    X[600, 1] = np.inf
    X[700] = np.nan
    res = _detector().score_learn(keys, X)
    assert np.isfinite(res.score).all()
    assert "missing temp_c" in res.reason[500]
    assert "missing pressure" in res.reason[600]
    assert res.reason[700] == "missing temp_c; missing pressure"


def test_one_shot_keys_and_empty_batches() -> None:
    det = _detector()
    res = det.score_learn(np.array(["a", "b", "c"], dtype=object), np.ones((3, 2)))
    assert not res.anomaly.any() and (res.score == 0).all()
    empty = det.score_learn(np.array([], dtype=object), np.zeros((0, 2)))
    assert empty.score.shape == (0,)
    int_keys = det.score_learn(np.array([1, 2, 1]), np.ones((3, 2)))
    assert int_keys.score.shape == (3,)


def test_wrong_shape_is_a_model_error() -> None:
    with pytest.raises(ModelError):
        _detector().score_learn(None, np.ones((4, 3)))
    with pytest.raises(ModelError):
        _detector().score_learn(np.array(["a"]), np.ones((2, 2)))


def test_million_distinct_keys_stay_bounded() -> None:
    det = OnlineAnomalyDetector(OnlineAnomalyConfig(features=["v"], key="id", max_keys=50_000))
    rng = np.random.default_rng(0)
    n = 1_000_000
    for start in range(0, n, 250_000):
        keys = np.arange(start, start + 250_000)
        det.score_learn(keys, rng.normal(size=(250_000, 1)))
    assert det.n_keys == 50_000
    assert det.evicted_keys == n - 50_000
    assert det.keys.cap == 50_000


def test_repeat_alert_is_flagged_but_its_onset_score_is_quiet() -> None:
    rng = np.random.default_rng(8)
    x = rng.normal(20.0, 1.0, size=(1500, 1))
    x[1000, 0] += 7.0
    x[1050, 0] += 5.5  # a weaker repeat soon after: flagged, but it starts no new incident
    x[1400, 0] += 40.0  # a stronger one starts one again
    det = OnlineAnomalyDetector(OnlineAnomalyConfig(features=["pressure"]))
    res = det.score_learn(None, x)
    assert res.anomaly[[1000, 1050, 1400]].all()
    assert res.onset[1050] == 0.0
    assert res.onset[1000] >= det.threshold() and res.onset[1400] >= det.threshold()
    # the published score is not damped: the repeat still ranks above every ordinary event
    assert res.score[1050] > res.score[50:1000].max()


def test_rising_edge_of_one_incident_has_one_onset() -> None:
    rng = np.random.default_rng(8)
    x = rng.normal(20.0, 1.0, size=(1500, 1))
    x[1000:1003, 0] += [6.0, 7.0, 8.0]  # one incident growing over three events
    x[1300, 0] += 40.0  # a separate, far stronger one
    det = OnlineAnomalyDetector(OnlineAnomalyConfig(features=["pressure"]))
    res = det.score_learn(None, x)
    assert res.anomaly[1000:1003].all()
    assert np.flatnonzero(res.onset[1000:1010] > 0).tolist() == [0]
    assert res.onset[1300] >= res.onset[1000:1010].max() > res.onset[50:1000].max()


def test_alert_ends_when_a_level_shift_returns_to_normal() -> None:
    rng = np.random.default_rng(9)
    x = rng.normal(20.0, 1.0, size=(1500, 1))
    x[1000:1030, 0] += 7.0  # a level shift; the values after it are ordinary again
    det = OnlineAnomalyDetector(OnlineAnomalyConfig(features=["pressure"]))
    res = det.score_learn(None, x)
    assert res.anomaly[1000:1030].mean() > 0.9
    # the averaging statistics still echo the shift, but the values are back at their level
    assert not res.anomaly[1035:1060].any()


def test_global_shift_within_a_wide_swing_is_a_regime_change() -> None:
    rng = np.random.default_rng(1)
    keys, steps = 40, 2400
    t = np.arange(steps)[:, None]
    # each key swings 3 sigma over 1440 events, so a shift of 7 hardly stands out for one key
    X = 20 + 3.0 * np.sin(2 * np.pi * (t / 1440 + rng.uniform(size=keys)))
    X = X + rng.normal(size=(steps, keys))
    X[1800:] += 7.0  # ... but every key moves at once
    k = np.tile(np.arange(keys), steps)
    det = OnlineAnomalyDetector(OnlineAnomalyConfig(features=["v"], key="k"))
    flat = X.reshape(-1, 1)
    flags = np.concatenate(
        [
            det.score_learn(k[i : i + 4000], flat[i : i + 4000]).anomaly
            for i in range(0, len(k), 4000)
        ]
    ).reshape(steps, keys)
    assert flags[400:1800].mean() < 0.001
    assert flags[1802:].mean() < 0.004  # only the first keys to move are flagged


def test_events_after_a_spike_are_not_a_wider_spread() -> None:
    rng = np.random.default_rng(8)
    x = rng.normal(20.0, 1.0, size=(3000, 1))
    spikes = np.arange(600, 3000, 300)
    x[spikes, 0] += 10.0
    det = OnlineAnomalyDetector(OnlineAnomalyConfig(features=["temp_c"]))
    res = det.score_learn(None, x)
    assert res.anomaly[spikes[1:]].all()
    # the return itself may register as a jump; the events after it are not a wider spread
    after = np.concatenate([np.arange(s + 2, s + 10) for s in spikes])
    assert not res.anomaly[after].any(), res.reason[after][res.anomaly[after]]


def test_return_from_a_drift_is_not_an_incident() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(50.0, 1.0, size=(2400, 1))
    starts = (800, 1600)
    for s in starts:  # ramps down to 8 sigma over 60 events, then snaps back
        x[s : s + 60, 0] -= np.arange(1, 61) * 8.0 / 60
    det = OnlineAnomalyDetector(OnlineAnomalyConfig(features=["temp_c"]))
    res = det.score_learn(None, x)
    for s in starts:
        assert res.anomaly[s + 36 : s + 60].all()  # the drift itself alerts
        # the level model learned part of the drift: the return is not a rise
        back = slice(s + 61, s + 160)  # the snap back itself may echo once
        assert res.anomaly[back].sum() == 0, res.reason[back][res.anomaly[back]]


def test_first_anomalous_event_after_a_quiet_spell_starts_an_incident() -> None:
    from sluice.models.detectors.evidence import INCIDENT_GAP, fresh_onsets, onsets
    from sluice.models.detectors.layout import split

    n = 300
    u = np.zeros(n)
    u[50] = 16.0  # a huge surprise: later, smaller ones do not beat its decayed maximum
    later = [100, 110, 100 + INCIDENT_GAP + 20]
    u[later] = 3.5
    anomalous = np.zeros(n, dtype=bool)
    anomalous[later] = True  # improbable enough to be kept out of history, not alerted
    (segs,) = split(np.zeros(n, dtype=np.int64), n)
    starts, first_alert, _ = onsets(
        u, np.zeros(n, dtype=bool), anomalous, np.ones(n, dtype=bool), segs, fresh_onsets(1), 250
    )
    assert not first_alert.any()
    # the first opens an incident, the second continues it, the third opens a new one
    assert list(np.flatnonzero(starts)) == [50, 100, 100 + INCIDENT_GAP + 20]


def _bursty(n: int, gaps: tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A quiet sensor (sd 0.1) with 30-60 sigma bursts at random gaps, and the burst rows."""
    rng = np.random.default_rng(seed)
    x = rng.normal(10.0, 0.1, n)
    bursts = np.cumsum(rng.integers(gaps[0], gaps[1], n // gaps[0]))
    bursts = bursts[bursts < n]
    x[bursts] += rng.uniform(3.0, 6.0, bursts.shape[0])
    return x.reshape(-1, 1), bursts


def test_recurring_bursts_become_the_keys_normal_but_rare_ones_still_alert() -> None:
    n = 6000
    frequent, at = _bursty(n, (80, 200), seed=5)  # ~1 burst in 140 events: 14x the budget
    rare, rare_at = _bursty(n, (1400, 1700), seed=6)  # within calibration's budget
    keys = np.array(["frequent"] * n + ["rare"] * n, dtype=object)
    res = OnlineAnomalyDetector(OnlineAnomalyConfig(features=["v"], key="k")).score_learn(
        keys, np.concatenate([frequent, rare])
    )
    early, late = at[(at >= 200) & (at < 1000)], at[at >= 4000]
    assert res.anomaly[early].mean() >= 0.8  # the first bursts are anomalies
    assert res.anomaly[late].mean() <= 0.35  # ... the many after them are not
    assert res.anomaly[n + rare_at[rare_at >= 200]].all()  # rare ones always are
    quiet = np.setdiff1d(np.arange(200, n), at)
    assert not res.anomaly[quiet].any()
