"""Per-key state of online_anomaly follows what a key learned: bulk state of young keys is
neither stored nor checkpointed, and checkpoints replay exactly across the promotion."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from sluice.core.errors import StateError
from sluice.models.detectors.calibrate import CalibrationParams, fresh_state, unlearned_state
from sluice.models.detectors.keys import KeyTable
from sluice.models.detectors.state_blob import pack, unpack
from sluice.models.online_anomaly import (
    CALIBRATION,
    PENDING,
    STATE_VERSION,
    OnlineAnomalyConfig,
    OnlineAnomalyDetector,
)

WARMUP = 30


def _config(max_keys: int = 100_000) -> OnlineAnomalyConfig:
    return OnlineAnomalyConfig(features=["a", "b"], key="k", max_keys=max_keys, warmup=WARMUP)


def _stream(n: int, n_keys: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    keys = np.where(rng.random(n) < 0.5, rng.integers(0, 50, n), rng.integers(0, n_keys, n))
    t = np.arange(n)
    X = np.column_stack([np.sin(t / 5.0 + keys) + 0.3 * rng.normal(size=n), rng.normal(size=n)])
    X[rng.random((n, 2)) < 0.02] = np.nan
    X[rng.integers(0, n, 20), 0] += 12.0
    return keys, X


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_unlearned_calibration_is_what_the_kernel_makes_of_the_prior() -> None:
    params = CalibrationParams(horizon=5000)
    count = np.array([0, 1, 16, 17, 30, 31])
    state = unlearned_state(9, count, params)
    expected = fresh_state(9, count.size)
    decay = params.block_decay
    for i, c in enumerate(count.tolist()):
        for _ in range(-(-c // params.block)):
            expected[i, 0] = expected[i, 0] * decay + 0.0
    np.testing.assert_array_equal(state, expected)


def test_young_keys_store_no_calibration_and_share_ring_pages() -> None:
    det = OnlineAnomalyDetector(_config())
    keys = np.tile(np.arange(3000), 10)  # 10 events a key: none has learned
    det.score_learn(keys, np.random.default_rng(1).normal(size=(keys.size, 2)))
    slots = det.keys.assign(np.arange(3000), 3000)
    assert (det.keys.arrays["count"][slots] <= WARMUP).all()
    assert not det.keys.arrays[CALIBRATION][slots].any()  # never written
    assert not det.keys.arrays[PENDING][slots].any()
    ring = det.keys.arrays["buf"]
    assert ring.strides[1] > ring.strides[0]  # position-major: position t of all keys together
    assert det.keys.arrays["ctx"].dtype == np.uint16


def test_memory_per_young_key_is_its_statistics_not_its_bulk_state() -> None:
    n_keys = 200_000
    det = OnlineAnomalyDetector(_config(max_keys=n_keys))
    keys = np.tile(np.arange(n_keys), 2)
    X = np.random.default_rng(0).normal(size=(keys.size, 2))
    det.score_learn(keys[:1000], X[:1000])  # compiled, first allocations made
    before = _rss_bytes()
    for start in range(1000, keys.size, 50_000):
        det.score_learn(keys[start : start + 50_000], X[start : start + 50_000])
    per_key = (_rss_bytes() - before) / n_keys
    row = det.keys.table.shape[1] * 8
    # statistics (0.6 KB) and allocator headroom for the batches; the bulk state of a key
    # (ring, calibration, bitsets: 9 KB) would be far more
    assert per_key < row + 1500, per_key


@pytest.mark.parametrize("max_keys", [100_000, 700])
def test_snapshot_and_deltas_restore_the_live_state_across_promotion(max_keys: int) -> None:
    keys, X = _stream(40_000, 1500, 2)
    live = OnlineAnomalyDetector(_config(max_keys))
    snapshot = live.get_state()
    live.keys.clean()
    deltas = []
    cuts = np.unique(np.r_[0, np.random.default_rng(3).integers(0, 40_000, 40), 40_000])
    for a, b in itertools.pairwise(cuts):  # keys cross warmup between deltas
        live.score_learn(keys[a:b], X[a:b])
        deltas.append(live.get_state(dirty=True))
        live.keys.clean()
    copy = OnlineAnomalyDetector(_config(max_keys))
    copy.set_state(snapshot)
    for delta in deltas:
        copy.set_state(delta)
    used = live.keys.used
    assert copy.keys.cap == live.keys.cap and (copy.keys.used == used).all()
    np.testing.assert_array_equal(copy.keys.table[used], live.keys.table[used])
    learned = used & (live.keys.arrays["count"] > WARMUP)
    assert learned.any() and (used & ~learned).any()
    for name in (CALIBRATION, PENDING):
        np.testing.assert_array_equal(
            copy.keys.arrays[name][learned], live.keys.arrays[name][learned]
        )
    np.testing.assert_array_equal(copy.keys.arrays["ctx"][used], live.keys.arrays["ctx"][used])
    window = live.config.season_window
    held = np.arange(window)[None, :] < np.minimum(live.keys.arrays["count"], window)[:, None]
    held &= used[:, None]
    np.testing.assert_array_equal(copy.keys.arrays["buf"][held], live.keys.arrays["buf"][held])
    more_keys, more_X = _stream(8000, 1500, 4)
    np.testing.assert_array_equal(
        copy.score_learn(more_keys, more_X).score, live.score_learn(more_keys, more_X).score
    )
    # and a full snapshot of the replayed state scores on the same way
    again = OnlineAnomalyDetector(_config(max_keys))
    again.set_state(copy.get_state())
    np.testing.assert_array_equal(
        again.score_learn(more_keys, more_X).score, copy.score_learn(more_keys, more_X).score
    )


def test_outputs_do_not_depend_on_batch_boundaries_across_promotion() -> None:
    keys, X = _stream(12_000, 200, 5)  # keys pass warmup (30) and calibration mid-stream
    whole = OnlineAnomalyDetector(_config()).score_learn(keys, X)
    cut = OnlineAnomalyDetector(_config())
    bounds = np.unique(np.r_[0, np.random.default_rng(6).integers(0, 12_000, 80), 12_000])
    parts = [cut.score_learn(keys[a:b], X[a:b]) for a, b in itertools.pairwise(bounds)]
    # equal up to float rounding (other keys' sums share one filter pass), as in main
    np.testing.assert_allclose(np.concatenate([p.score for p in parts]), whole.score, atol=1e-9)
    np.testing.assert_array_equal(np.concatenate([p.anomaly for p in parts]), whole.anomaly)
    np.testing.assert_array_equal(np.concatenate([p.onset for p in parts]) > 0, whole.onset > 0)
    assert (whole.onset > 0).any()


def test_a_state_of_the_previous_layout_is_refused_clearly() -> None:
    det = OnlineAnomalyDetector(_config())
    det.score_learn(*_stream(500, 10, 7))
    arrays = unpack(det.get_state())
    header = json.loads(bytes(arrays["header"]))
    header["version"] = STATE_VERSION - 1  # float32 context words, every slot's calibration
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    blob = pack(arrays)
    with pytest.raises(StateError, match="version"):
        OnlineAnomalyDetector(_config()).set_state(blob)


def test_noted_positions_fall_back_to_whole_rows_when_too_many(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sluice.models.detectors import keys as keys_module

    table = KeyTable(100, {"count": ((), 0.0)}, {"w": ((4,), 0.0)})
    table.note("w", np.array([3, 1]))
    table.note("w", np.array([1]))
    np.testing.assert_array_equal(table.noted("w"), [1, 3])
    monkeypatch.setattr(keys_module, "NOTED_MAX", 2)
    table.note("w", np.array([5]))
    assert table.noted("w") is None
    table.clean()
    assert table.noted("w") is not None and table.noted("w").size == 0


def test_the_running_key_summary_matches_a_recount_through_evictions() -> None:
    keys, X = _stream(30_000, 3000, 8)
    X[15_000:, 0] += 6.0  # many keys shift at once: signs move
    det = OnlineAnomalyDetector(_config(max_keys=900))
    for start in range(0, keys.size, 2500):
        det.score_learn(keys[start : start + 2500], X[start : start + 2500])
        counts, known = det._key_summary()
        det._summary = None
        recount, known_again = det._key_summary()
        np.testing.assert_array_equal(counts, recount)
        assert known == known_again
    assert det.keys.evicted > 0 and counts.any()
