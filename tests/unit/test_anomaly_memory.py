"""Per-key state memory of online_anomaly: lazily mapped ring buffers, growth, sparse pairs."""

from __future__ import annotations

import pickle
import platform

import numpy as np
import pytest

from sluice.core.allocator import reuse_freed_memory
from sluice.models.detectors import keys as keys_module
from sluice.models.detectors.keys import KeyTable, lazy_zeros
from sluice.models.online_anomaly import OnlineAnomalyConfig, OnlineAnomalyDetector


@pytest.mark.parametrize("shape", [(3, 4), (512, 720, 5)])
def test_lazy_zeros_are_writable_float32_zeros(shape: tuple[int, ...]) -> None:
    values = lazy_zeros(shape)
    assert values.shape == shape and values.dtype == np.float32
    assert not values[:2].any() and not values[-1].any()
    values[-1] = 7.0
    assert float(values[-1].sum()) == 7.0 * values[-1].size


@pytest.mark.parametrize("reserve", [True, False])
def test_bulk_values_survive_growth(reserve: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if not reserve:  # grown by copying, as when the reservation is refused
        monkeypatch.setattr(keys_module, "RESERVE_BYTES", 0)
    table = KeyTable(5000, {"x": ((), 0.0)}, {"buf": ((720, 2), 0.0)})
    first = table.assign(np.arange(1000), 1000)
    table.arrays["buf"][first, 3] = np.arange(1000)[:, None]
    second = table.assign(np.arange(1000, 4000), 3000)
    assert table.cap >= 4000 and not np.isin(second, first).any()
    np.testing.assert_array_equal(table.arrays["buf"][first, 3, 1], np.arange(1000))
    assert not table.arrays["buf"][second].any()


def test_a_broken_relation_is_flagged_only_for_keys_that_have_it() -> None:
    rng = np.random.default_rng(5)
    n = 40_000
    keys = rng.integers(0, 400, n)
    X = rng.normal(size=(n, 3))
    linked = keys < 100  # b follows a for these keys only
    X[linked, 1] = X[linked, 0] + 0.1 * rng.normal(size=int(linked.sum()))
    late = np.flatnonzero(np.arange(n) > n - 2000)
    broken = late[linked[late]][:5]
    X[broken, 1] = -X[broken, 0] - 1.0
    det = OnlineAnomalyDetector(OnlineAnomalyConfig(features=list("abc"), key="k"))
    res = det.score_learn(keys, X)
    relation = np.array(["usual relation" in r for r in res.reason])
    assert relation[broken].sum() >= 4
    assert not relation[~linked].any()


def test_a_pickled_detector_scores_on_exactly_without_its_reservation() -> None:
    rng = np.random.default_rng(2)
    det = OnlineAnomalyDetector(OnlineAnomalyConfig(features=["a", "b"], key="k"))
    det.score_learn(rng.integers(0, 50, 5000), rng.normal(size=(5000, 2)))
    blob = pickle.dumps(det)
    assert len(blob) < 4 * det.keys.arrays["buf"].nbytes  # not the max_keys reservation
    copy = pickle.loads(blob)
    keys, X = rng.integers(0, 3000, 8000), rng.normal(size=(8000, 2))  # grows the table
    np.testing.assert_array_equal(copy.score_learn(keys, X).score, det.score_learn(keys, X).score)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_glibc_is_asked_to_keep_large_temporaries_on_its_heap() -> None:
    assert reuse_freed_memory()
