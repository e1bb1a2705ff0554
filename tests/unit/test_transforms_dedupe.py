"""dedupe: keep the first row per key within an event-time window."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pytest

from sluice.config.models import DedupeSpec
from sluice.core.context import EpochContext
from sluice.core.errors import ConfigError
from sluice.transforms.dedupe import DedupeTransform

SECOND = 1_000_000
BASE = 1_700_000_000 * SECOND


def rows(keys: Sequence[str | None], seconds: Sequence[float]) -> pa.Table:
    return pa.table(
        {
            "k": pa.array(keys, pa.string()),
            "ts": pa.array([BASE + int(s * SECOND) for s in seconds], pa.timestamp("us", tz="UTC")),
            "__origin": [f"r{i}" for i in range(len(keys))],
        }
    )


def dedupe(window: str = "10s", key: str | list[str] = "k") -> DedupeTransform:
    return DedupeTransform(DedupeSpec(key=key, window=window), 1, "ts")


def expected_kept(keys: list[str], seconds: list[float], window: float) -> list[int]:
    """Reference for in-order input: a row repeats if its key was seen less than ``window`` ago."""
    last: dict[str, float] = {}
    kept = []
    for i, (key, t) in enumerate(zip(keys, seconds, strict=True)):
        if key not in last or t - last[key] >= window:
            kept.append(i)
        last[key] = t
    return kept


def test_repeats_within_the_window_are_dropped_and_counted() -> None:
    ctx = EpochContext("p", 1)
    out = dedupe().apply(rows(["a", "b", "a", "a", "b", "a"], [0, 1, 5, 14, 11, 30]), ctx)
    # a@5 repeats a@0; a@14 repeats a@5 (seen 9 s before); b@11 is 10 s after b@1: new
    assert out.column("__origin").to_pylist() == ["r0", "r1", "r4", "r5"]
    assert ctx.counters["deduplicated"] == 2 and ctx.counters["filtered"] == 2


def test_matches_reference_across_batches() -> None:
    rng = np.random.default_rng(4)
    n = 5000
    keys = [f"k{i}" for i in rng.integers(0, 50, n)]
    seconds = np.cumsum(rng.exponential(0.2, n)).round(3).tolist()
    table = rows(keys, seconds)
    op, ctx, out = dedupe("10s"), EpochContext("p", 1), []
    for start in range(0, n, 777):
        out.append(op.apply(table.slice(start, 777), ctx))
    kept = pa.concat_tables(out).column("__origin").to_pylist()
    assert kept == [f"r{i}" for i in expected_kept(keys, seconds, 10.0)]
    assert ctx.counters["deduplicated"] == n - len(kept)


def test_out_of_order_repeat_across_batches_is_dropped() -> None:
    op, ctx = dedupe(), EpochContext("p", 1)
    op.apply(rows(["a"], [20]), ctx)
    out = op.apply(rows(["a", "a", "b"], [15, 5, 16]), ctx)  # 15 within 10 s of 20; 5 is not
    assert out.column("__origin").to_pylist() == ["r1", "r2"]


def test_null_keys_are_never_repeats() -> None:
    out = dedupe().apply(rows([None, None, "a", "a"], [0, 0, 0, 0]), EpochContext("p", 1))
    assert out.column("__origin").to_pylist() == ["r0", "r1", "r2"]


def test_state_round_trip_and_bounded() -> None:
    keys = [f"k{i % 30}" for i in range(3000)]
    seconds = [i * 0.5 for i in range(3000)]
    table = rows(keys, seconds)
    whole_op, ctx = dedupe("20s"), EpochContext("p", 1)
    whole = [whole_op.apply(table.slice(s, 500), ctx) for s in range(0, 3000, 500)]
    first = dedupe("20s")
    head = [first.apply(table.slice(s, 500), ctx) for s in range(0, 1500, 500)]
    second = dedupe("20s")
    blob = first.state()
    assert blob is not None
    second.restore(blob)
    tail = [second.apply(table.slice(s, 500), ctx) for s in range(1500, 3000, 500)]
    assert pa.concat_tables(head + tail).equals(pa.concat_tables(whole))
    assert second.describe()["remembered_keys"] <= 30


def test_keys_forgotten_after_twice_the_window() -> None:
    op, ctx = dedupe("10s"), EpochContext("p", 1)
    for i in range(100):
        op.apply(rows([f"k{i}"], [i * 30]), ctx)
    assert op.describe()["remembered_keys"] == 1


def test_multi_key_empty_batch_and_config_errors() -> None:
    table = rows(["a", "a"], [0, 1]).append_column("site", pa.array(["x", "y"]))
    out = dedupe(key=["k", "site"]).apply(table, EpochContext("p", 1))
    assert out.num_rows == 2
    assert dedupe().apply(rows([], []), EpochContext("p", 1)).num_rows == 0
    with pytest.raises(ConfigError, match=r"transforms\[1\]\.dedupe: unknown column"):
        dedupe(key="nope").apply(table, EpochContext("p", 1))
    with pytest.raises(ConfigError, match="event_time"):
        DedupeTransform(DedupeSpec(key="k"), 1, None)
