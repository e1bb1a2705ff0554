"""``online_anomaly`` outputs in the lake do not depend on where micro-batch boundaries fall."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from sluice.evaluation.lake import DetectorSpec, LakeRun, run_table

SCHEMA = {"key": "string", "ts": "timestamp", "a": "double", "b": "double"}
OUTPUTS = ("anomaly", "onset", "score")


def keyed_events(keys: int, per_key: int, seed: int = 3) -> pa.Table:
    """Interleaved keys of correlated noise with a planted spike and a level shift."""
    rng = np.random.default_rng(seed)
    key_of = rng.permutation(np.repeat(np.arange(keys), per_key))
    n = key_of.size
    a = 10.0 * key_of + rng.normal(size=n)
    b = 0.7 * a + rng.normal(size=n)
    nth = np.zeros(n, dtype=np.int64)
    for k in range(keys):
        nth[key_of == k] = np.arange(per_key)
    a[(key_of == 0) & (nth == int(per_key * 0.6))] += 25.0
    b[(key_of == keys - 1) & (nth >= int(per_key * 0.8))] += 8.0
    start = np.datetime64("2026-01-01T00:00:00", "us")
    return pa.table(
        {
            "key": pa.array([f"k{k}" for k in key_of]),
            "ts": pa.array(start + np.arange(n) * np.timedelta64(1, "s"), pa.timestamp("us")),
            "a": a,
            "b": b,
        }
    )


def _run(data: pa.Table, batch: dict[str, object]) -> LakeRun:
    detector = DetectorSpec(["a", "b"], key="key")
    return run_table("inv", data, SCHEMA, detector, event_time="ts", batch=batch)


def assert_same_outputs(got: LakeRun, want: LakeRun, tolerance: float = 1e-9) -> None:
    """Identical alerts, onsets within ``tolerance`` (zero where zero), scores within it."""
    assert got.table.num_rows == want.table.num_rows
    np.testing.assert_array_equal(got.output("anomaly"), want.output("anomaly"))
    np.testing.assert_array_equal(got.output("onset") > 0, want.output("onset") > 0)
    np.testing.assert_array_equal(got.output("reason"), want.output("reason"))
    for column in ("onset", "score"):
        np.testing.assert_allclose(got.output(column), want.output(column), rtol=0, atol=tolerance)


@pytest.fixture(scope="module")
def events() -> pa.Table:
    """Three keys x 500 events (alerts start after a key's first 200 events)."""
    return keyed_events(3, 500)


@pytest.fixture(scope="module")
def one_epoch(events: pa.Table) -> LakeRun:
    """The whole input as a single micro-batch."""
    run = _run(events, {"max_rows": 1_000_000, "max_latency": "1h"})
    assert run.epochs == 1
    assert run.output("anomaly").sum() > 0 and (run.output("onset") > 0).sum() > 0
    return run


@pytest.mark.parametrize("max_rows", [pytest.param(7, marks=pytest.mark.slow), 1000])
def test_micro_batch_size_does_not_change_outputs(
    events: pa.Table, one_epoch: LakeRun, max_rows: int
) -> None:
    run = _run(events, {"max_rows": max_rows, "max_latency": "1h"})
    assert run.epochs == -(-events.num_rows // max_rows)
    assert_same_outputs(run, one_epoch)


@pytest.mark.slow
def test_one_row_batches_give_the_same_outputs() -> None:
    small = keyed_events(2, 80, seed=4)
    whole = _run(small, {"max_rows": 1_000_000, "max_latency": "1h"})
    single = _run(small, {"max_rows": 1, "max_latency": "1h"})
    assert single.epochs == small.num_rows
    assert (single.output("score") > 0).sum() > 50
    assert_same_outputs(single, whole)
