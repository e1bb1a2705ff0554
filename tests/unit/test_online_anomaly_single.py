"""Scoring one event per key without learning (the predict path) answers as the batch path:
the same scores, flags and reasons for known, warm-up and unseen keys, NaN features, seasonal
keys at and between refresh points, and after the state changes."""

from __future__ import annotations

import numpy as np

from sluice.models.online_anomaly import OnlineAnomalyConfig, OnlineAnomalyDetector, ScoreResult

FEATURES = ["a", "b", "c"]
PERIOD = 24


def _learned(seed: int = 0) -> tuple[OnlineAnomalyDetector, list[str]]:
    """A detector whose keys have 3 to 900 events: seasonal, correlated, quantised features."""
    rng = np.random.default_rng(seed)
    names = [f"k{i:02d}" for i in range(40)]
    counts = rng.integers(3, 900, len(names))
    counts[:4] = [3, 12, 29, 30]  # warm-up keys
    counts[4:8] = [90, 180, 360, 720]  # the next event is a seasonal refresh point
    keys = np.repeat(np.array(names, dtype=object), counts)
    t = np.concatenate([np.arange(c) for c in counts])
    base = rng.normal(10.0, 3.0, len(names))[np.repeat(np.arange(len(names)), counts)]
    season = np.where(np.repeat(np.arange(len(names)) % 2 == 0, counts), 1.0, 0.0)
    a = base + 4.0 * season * np.sin(2 * np.pi * t / PERIOD) + rng.normal(0.0, 0.3, t.size)
    b = -1.5 * a + rng.normal(0.0, 0.4, t.size)
    c = np.round(rng.normal(0.0, 1.0, t.size))
    X = np.column_stack([a, b, c])
    X[rng.random(X.shape) < 0.01] = np.nan
    order = np.argsort(t + rng.random(t.size), kind="stable")  # keys interleaved in time
    # room for all keys (no eviction when a twin learns an unseen one), small to restore
    det = OnlineAnomalyDetector(OnlineAnomalyConfig(features=FEATURES, key="k", max_keys=64))
    for i in range(0, t.size, 500):
        det.score_learn(keys[order][i : i + 500], X[order][i : i + 500])
    return det, names


def _probes(det: OnlineAnomalyDetector, names: list[str]) -> list[tuple[str, np.ndarray]]:
    """Ordinary rows, spikes, NaN features, broken relations and stuck values, per key."""
    rng = np.random.default_rng(1)
    probes = []
    for key in [*names, "unseen-1", "unseen-2"]:
        slot = det.keys.index.get(key)
        level = det.keys.arrays["ref"][slot] if slot is not None else np.array([10.0, -15.0, 0.0])
        normal = level + rng.normal(0.0, 0.3, 3)
        probes += [
            (key, normal),
            (key, normal + np.array([12.0, 0.0, 0.0])),
            (key, normal + np.array([0.0, -18.0, 0.0])),
            (key, np.where([False, True, False], np.nan, normal)),
            (key, np.full(3, np.nan)),
            (key, np.array([normal[0] + 3.0, normal[1] + 4.5, 0.0])),
        ]
    return probes


def _assert_same(got: ScoreResult, want: ScoreResult) -> None:
    np.testing.assert_allclose(got.score, want.score, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(got.anomaly, want.anomaly)
    np.testing.assert_array_equal(got.reason, want.reason)


def _learning_twin(det: OnlineAnomalyDetector, blob: bytes) -> OnlineAnomalyDetector:
    twin = OnlineAnomalyDetector(det.config)
    twin.set_state(blob)
    return twin


def test_one_event_per_key_scores_as_the_batch_path() -> None:
    det, names = _learned()
    blob = det.get_state()
    flagged = 0
    for key, row in _probes(det, names):
        keys, X = np.array([key], dtype=object), row[None, :]
        fast = det.score(keys, X)
        # learning scores each event from the state before it, with the scans
        _assert_same(fast, _learning_twin(det, blob).score_learn(keys, X))
        # the first of two events of a key is scored from its state too (contiguous layout)
        pair = det.score(np.array([key, key], dtype=object), np.vstack([row, row + 1.0]))
        _assert_same(fast, ScoreResult(pair.score[:1], pair.anomaly[:1], pair.reason[:1]))
        flagged += int(fast.anomaly[0])
    assert flagged >= 10  # reasons were compared, not only empty strings
    assert det.get_state() == blob  # scoring learned nothing


def test_a_handful_of_distinct_keys_scores_as_the_batch_path() -> None:
    det, names = _learned(seed=2)
    blob = det.get_state()
    probes = _probes(det, names)
    rng = np.random.default_rng(3)
    for _ in range(20):
        picked = rng.choice(len(names) + 2, size=5, replace=False)
        rows = [probes[6 * int(k) + int(rng.integers(0, 6))] for k in picked]
        keys = np.array([k for k, _ in rows], dtype=object)
        X = np.vstack([x for _, x in rows])
        _assert_same(det.score(keys, X), _learning_twin(det, blob).score_learn(keys, X))


def test_scores_follow_the_state_after_learning_and_restoring() -> None:
    det, names = _learned(seed=4)
    keys = np.array(names[:8], dtype=object)
    X = np.tile([10.0, -15.0, 0.0], (8, 1))
    before = det.score(keys, X)
    rng = np.random.default_rng(5)
    for _ in range(3):  # the same keys jump: their state, hence their next scores, change
        det.score_learn(keys, X + rng.normal(0.0, 0.2, X.shape) + 6.0)
    after = det.score(keys, X)
    assert not np.allclose(after.score, before.score)
    _assert_same(after, _learning_twin(det, det.get_state()).score_learn(keys, X))
    restored = _learned(seed=4)[0]
    det.set_state(restored.get_state())
    _assert_same(det.score(keys, X), before)


def test_prepare_derives_ahead_without_changing_answers() -> None:
    det, names = _learned(seed=6)
    blob = det.get_state()
    probes = _probes(det, names)
    keys = np.array([k for k, _ in probes], dtype=object)
    X = np.vstack([x for _, x in probes])
    ready = _learning_twin(det, blob)
    ready.prepare()
    assert ready.get_state() == blob  # preparing learned nothing
    for i in range(0, len(keys), 37):  # single events, as predict requests come
        _assert_same(
            ready.score(keys[i : i + 1], X[i : i + 1]), det.score(keys[i : i + 1], X[i : i + 1])
        )
