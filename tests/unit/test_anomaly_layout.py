"""Segmented scans agree with a plain per-key loop in both layouts; chunking keeps scores."""

from __future__ import annotations

import numpy as np
import pytest

from sluice.models.detectors.layout import Segments, split
from sluice.models.detectors.scan import (
    decayed_max,
    ew_scan,
    ew_scans,
    last_valid,
    latch,
    run_length,
)
from sluice.models.online_anomaly import OnlineAnomalyConfig, OnlineAnomalyDetector


def _slots(kind: str, rng: np.random.Generator) -> np.ndarray:
    if kind == "few":  # contiguous layout
        return rng.integers(0, 5, 400)
    if kind == "single":  # one event per key: one block
        return rng.permutation(40) * 3
    # many short keys plus a few long ones: position-major head and a contiguous tail
    return np.concatenate([rng.integers(0, 300, 3000), rng.integers(0, 3, 600)])[
        rng.permutation(3600)
    ]


def _reference(slots: np.ndarray, step, init: dict[int, float]) -> tuple[np.ndarray, dict]:
    """Per-row output of ``step(state, row) -> (out, new_state)`` walked in arrival order."""
    out = np.empty(slots.shape[0])
    state = dict(init)
    for row, key in enumerate(slots.tolist()):
        out[row], state[key] = step(state[key], row)
    return out, state


@pytest.mark.parametrize("kind", ["few", "many", "single"])
def test_scans_match_a_per_key_loop(kind: str) -> None:
    rng = np.random.default_rng(0)
    slots = _slots(kind, rng)
    segs = Segments.from_slots(slots)
    assert bool(segs.blocks) == (kind != "few") and (kind != "many" or segs.tail is not None)
    assert segs.single == (kind == "single")
    n, keys = slots.shape[0], sorted(set(slots.tolist()))
    v = rng.normal(size=n)
    flag = rng.random(n) < 0.7
    init_of = {k: float(rng.normal()) for k in keys}
    init = np.array([[init_of[int(s)] for s in segs.slot]])
    pos = np.empty(n, dtype=np.int64)
    pos[segs.order] = np.arange(n)

    def check(got: tuple[np.ndarray, np.ndarray], step, start: dict, tol: float) -> None:
        want, final = _reference(slots, step, start)
        np.testing.assert_allclose(got[0][0][pos], want, rtol=tol, atol=tol)
        np.testing.assert_allclose(got[1][0], [final[int(s)] for s in segs.slot], rtol=tol)

    sv, sf = v[segs.order][None], flag[segs.order][None]
    check(ew_scan(sv, 0.9, segs, init), lambda y, r: (y, 0.9 * y + v[r]), init_of, 1e-9)
    # several groups at once: rows (n,) or (r, n), each group with its own decay
    pair, pair_init = np.vstack([sv, 2.0 * sv]), np.vstack([init, -init])
    befores, finals = ew_scans(
        [([sv[0], pair], 0.9, [init[0], pair_init]), ([sv], 0.5, [init])], segs
    )
    first, second, third = (
        ew_scan(sv, 0.9, segs, init),
        ew_scan(pair, 0.9, segs, pair_init),
        ew_scan(sv, 0.5, segs, init),
    )
    wants = [(first[0][0], first[1][0]), second, third]
    for before, final, want in zip(befores, finals, wants, strict=True):
        np.testing.assert_allclose(before, want[0], rtol=1e-12)
        np.testing.assert_allclose(final, want[1], rtol=1e-12)
    check(
        last_valid(sv, sf, segs, init),
        lambda y, r: (y, v[r] if flag[r] else y),
        init_of,
        0.0,
    )
    runs = {k: 2.0 for k in keys}
    got = run_length(sf, segs, np.full((1, segs.m), 2.0))
    step = lambda y, r: ((y + 1) * flag[r],) * 2  # noqa: E731
    check(got, step, runs, 0.0)
    pos_v = np.abs(sv)
    check(
        decayed_max(pos_v, 0.8, segs, np.abs(init)),
        lambda y, r: (y, max(abs(v[r]), 0.8 * y)),
        {k: abs(x) for k, x in init_of.items()},
        1e-9,
    )
    keep = (v > -0.5)[segs.order][None]
    on, final = latch(sf & (sv > 1.0), keep, segs, (init > 0).astype(float))
    want, last = _reference(
        slots,
        lambda y, r: ((flag[r] and v[r] > 1.0) or (y and v[r] > -0.5),) * 2,
        {k: init_of[k] > 0 for k in keys},
    )
    np.testing.assert_array_equal(on[0][pos], want.astype(bool))
    np.testing.assert_array_equal(final[0], [last[int(s)] for s in segs.slot])
    shifted = segs.shift(sv, init)[0][pos]
    prev, _ = _reference(slots, lambda y, r: (y, v[r]), init_of)
    np.testing.assert_array_equal(shifted, prev)


def test_split_keeps_keys_whole() -> None:
    rng = np.random.default_rng(1)
    slots = _slots("many", rng)
    parts = split(slots, 500)
    rows = np.concatenate([p.order for p in parts])
    assert sorted(rows.tolist()) == list(range(slots.shape[0]))
    owners = [set(slots[p.order].tolist()) for p in parts]
    assert sum(len(o) for o in owners) == len(set().union(*owners))


def test_chunked_batches_score_like_whole_ones() -> None:
    rng = np.random.default_rng(2)
    n = 6000
    keys = rng.integers(0, 400, n)
    X = rng.normal(size=(n, 2))
    X[rng.random(X.shape) < 0.01] = np.nan
    config = OnlineAnomalyConfig(features=["a", "b"], key="k")
    whole, chunked = OnlineAnomalyDetector(config), OnlineAnomalyDetector(config)
    whole.chunk, chunked.chunk = 10**9, 300
    for i in range(0, n, 2000):
        a = whole.score_learn(keys[i : i + 2000], X[i : i + 2000])
        b = chunked.score_learn(keys[i : i + 2000], X[i : i + 2000])
        np.testing.assert_allclose(b.score, a.score, rtol=1e-9, atol=1e-9)
        np.testing.assert_array_equal(b.anomaly, a.anomaly)
        np.testing.assert_array_equal(b.reason, a.reason)


def test_ew_scan_of_a_key_does_not_inherit_rounding_from_a_larger_one() -> None:
    rng = np.random.default_rng(8)
    squares = np.concatenate([rng.normal(0, 5e7, 2000) ** 2, rng.normal(0, 0.5, 2000) ** 2])
    decay = 1.0 - 1.0 / 300
    together = Segments.from_slots(np.repeat([0, 1], 2000))
    assert not together.blocks  # the contiguous layout, where keys follow one another
    before, final = ew_scan(squares[None, :], decay, together, np.zeros((1, 2)))
    alone = Segments.from_slots(np.zeros(2000, dtype=np.int64))
    want, want_final = ew_scan(squares[None, 2000:], decay, alone, np.zeros((1, 1)))
    np.testing.assert_array_equal(before[0, 2000:], want[0])
    assert final[0, 1] == want_final[0, 0]
