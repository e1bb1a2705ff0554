"""Context novelty (CAD-style): new patterns of quantised values are novel, familiar ones are
not, whatever the batching, and the state survives a checkpoint."""

from __future__ import annotations

from itertools import pairwise

import numpy as np

from sluice.models.detectors.context import (
    CONTEXT_STATE,
    SINCE_STATE,
    WORDS,
    _sorted,
    context_scores,
)
from sluice.models.detectors.layout import Segments
from sluice.models.online_anomaly import OnlineAnomalyConfig, OnlineAnomalyDetector


class _Stream:
    """Feeds a keyed stream through :func:`context_scores` chunk by chunk, keeping the state
    of each key (its slot is the key) as the detector's key table would."""

    def __init__(self, p: int, keys: int) -> None:
        self.state = {k: np.zeros((p, keys)) for k in CONTEXT_STATE}
        self.state[SINCE_STATE] = np.zeros(keys)
        self.bits = np.zeros((keys, p, WORDS), dtype=np.float32)
        self.events = np.zeros(keys)

    def feed(self, keys: np.ndarray, X: np.ndarray) -> np.ndarray:
        """Novel flag of each row of one chunk (rows in arrival order)."""
        segs = Segments.from_slots(keys)
        init = {k: v[..., segs.slot] for k, v in self.state.items()}
        res = context_scores(X[segs.order].T, segs, init, self.events[segs.slot] == 0, self.bits)
        res.update.write()
        for k, v in res.state.items():
            self.state[k][..., segs.slot] = v
        self.events[segs.slot] += segs.lengths
        novel = np.empty(keys.shape[0], dtype=bool)
        novel[segs.order] = res.novel
        return novel


def _periodic(cycles: int) -> np.ndarray:
    return np.tile([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 4.0, 3.0, 2.0, 1.0], cycles)


def test_a_new_pattern_inside_the_usual_range_is_novel() -> None:
    x = _periodic(60)
    x[400:410] = [0.0, 5.0, 0.0, 5.0, 0.0, 5.0, 0.0, 5.0, 0.0, 5.0]  # same values, new order
    novel = _Stream(1, 1).feed(np.zeros(x.size, dtype=np.int64), x[:, None])
    assert novel[:12].any()  # a young key sees new contexts
    assert not novel[50:400].any()  # the cycle is familiar: no level or range change either
    assert novel[400:412].any()
    assert not novel[430:].any()  # the cycle resumes: familiar again
    # a level test sees nothing: the values never leave the range the key has shown
    assert x[400:410].min() >= x[:400].min() and x[400:410].max() <= x[:400].max()


def test_a_pattern_is_novel_only_the_first_time() -> None:
    x = _periodic(40)
    x[200:204] = x[300:304] = [5.0, 0.0, 5.0, 0.0]  # the same odd pattern twice
    novel = _Stream(1, 1).feed(np.zeros(x.size, dtype=np.int64), x[:, None])
    assert novel[200:208].any()
    assert not novel[300:].any()


def test_novelty_does_not_depend_on_batching() -> None:
    rng = np.random.default_rng(5)
    n, keys = 4000, 90  # enough keys for the block layout
    k = rng.integers(0, keys, n)
    X = np.round(rng.normal(size=(n, 2)) * 2.0)
    X[rng.random(X.shape) < 0.03] = np.nan
    whole = _Stream(2, keys).feed(k, X)
    cut = _Stream(2, keys)
    bounds = [0, 1, 7, 300, 301, 1500, 2600, n]
    parts = [cut.feed(k[a:b], X[a:b]) for a, b in pairwise(bounds)]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    assert 0 < whole.sum() < n


def test_a_fresh_key_ignores_bits_left_in_its_slot() -> None:
    x = _periodic(10)[:, None]
    stream = _Stream(1, 1)
    first = stream.feed(np.zeros(x.shape[0], dtype=np.int64), x)
    stream.state = {k: np.zeros_like(v) for k, v in stream.state.items()}
    stream.events[:] = 0  # the slot now holds another key; its bits are stale
    again = stream.feed(np.zeros(x.shape[0], dtype=np.int64), x)
    np.testing.assert_array_equal(again, first)


def test_detector_state_round_trip_keeps_the_contexts() -> None:
    rng = np.random.default_rng(2)
    x = (_periodic(150) + rng.normal(0.0, 0.1, 1500))[:, None]
    x[1200:1206, 0] = [5.0, 0.0, 5.0, 0.0, 5.0, 0.0]
    config = OnlineAnomalyConfig(features=["v"])
    straight = OnlineAnomalyDetector(config)
    whole = straight.score_learn(None, x).onset
    first = OnlineAnomalyDetector(config)
    head = first.score_learn(None, x[:700]).onset
    second = OnlineAnomalyDetector(config)
    second.set_state(first.get_state())
    tail = second.score_learn(None, x[700:]).onset
    np.testing.assert_allclose(np.concatenate([head, tail]), whole, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(second.keys.arrays["ctx"], straight.keys.arrays["ctx"])


def test_new_contexts_sort_by_context_then_value_packed_or_not() -> None:
    rng = np.random.default_rng(3)
    ctx, flat = rng.integers(0, 40, 500), rng.integers(0, 300, 500)
    order = np.lexsort((flat, ctx))
    for ctx_end in (40, 1 << 60):  # packed in one integer, and too wide to pack
        got_ctx, got_flat = _sorted(ctx, flat, ctx_end, 300)
        np.testing.assert_array_equal(got_ctx, ctx[order])
        np.testing.assert_array_equal(got_flat, flat[order])
