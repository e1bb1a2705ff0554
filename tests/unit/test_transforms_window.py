"""Event-time windows against a plain DuckDB GROUP BY over the whole input."""

from __future__ import annotations

import itertools

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sluice.config.models import WindowSpec
from sluice.core.context import EpochContext
from sluice.core.errors import ConfigError
from sluice.transforms.window import WindowTransform

SECOND = 1_000_000
BASE = 1_700_000_040 * SECOND  # a whole minute
AGGREGATES = {
    "n": "count(*)",
    "mean": "avg(temp)",
    "spread": "max(temp) - min(temp)",
    "p90": "quantile_cont(temp, 0.9)",
}


def events(
    n: int, *, seed: int, keys: int = 5, step_s: float = 1.0, jitter_s: float = 0.0
) -> pa.Table:
    """Rows in time order, then displaced by up to ``jitter_s`` (out of order within it)."""
    rng = np.random.default_rng(seed)
    base = BASE + (np.cumsum(rng.exponential(step_s, n)) * SECOND).astype(np.int64)
    jitter = (rng.uniform(-jitter_s / 2, jitter_s / 2, n) * SECOND).astype(np.int64)
    return pa.table(
        {
            "device_id": pa.array([f"d{k}" for k in rng.integers(0, keys, n)]),
            "site": pa.array([f"s{k}" for k in rng.integers(0, 2, n)]),
            "ts": pa.array(base + jitter, pa.timestamp("us", tz="UTC")),
            "temp": rng.normal(20, 5, n),
            "__origin": pa.array([f"row{i}" for i in range(n)]),
        }
    )


def window(
    size: str = "1m",
    slide: str | None = None,
    lateness: str = "0s",
    key: str | list[str] | None = "device_id",
    into: str | None = None,
    aggregate: dict[str, str] | None = None,
) -> WindowTransform:
    spec = WindowSpec(
        key=key,
        size=size,
        slide=slide,
        allowed_lateness=lateness,
        into=into,
        aggregate=aggregate or AGGREGATES,
    )
    return WindowTransform(spec, 3, "ts")


def reference(table: pa.Table, *, size_s: int, slide_s: int, keys: list[str]) -> pa.Table:
    """Each window's aggregates by a join of rows to enumerated windows (no index arithmetic)."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("events", table)
    size, slide = size_s * SECOND, slide_s * SECOND
    cols = "".join(f"{k}, " for k in keys)
    aggs = ", ".join(f"{sql} AS {name}" for name, sql in AGGREGATES.items())
    return con.sql(f"""
        WITH bounds AS (SELECT min(epoch_us(ts)) AS lo, max(epoch_us(ts)) AS hi FROM events),
        windows AS (SELECT unnest(range((lo // {slide} - {size // slide + 1}) * {slide},
                                        hi + {slide}, {slide})) AS ws FROM bounds)
        SELECT {cols}make_timestamp(ws)::TIMESTAMPTZ AS window_start,
               make_timestamp(ws + {size})::TIMESTAMPTZ AS window_end, {aggs}
        FROM events JOIN windows ON epoch_us(ts) >= ws AND epoch_us(ts) < ws + {size}
        GROUP BY ALL ORDER BY window_start{"".join(f", {k}" for k in keys)}
    """).to_arrow_table()


def run(
    op: WindowTransform, table: pa.Table, cuts: list[int], ctx: EpochContext | None = None
) -> pa.Table:
    """Feed ``table`` cut at ``cuts`` and finish; return every emitted window."""
    ctx = ctx or EpochContext("p", 1)
    bounds = [0, *sorted(set(cuts)), table.num_rows]
    out = [op.apply(table.slice(a, b - a), ctx) for a, b in itertools.pairwise(bounds)]
    final = op.finish(ctx)
    return pa.concat_tables([*out, *([final] if final is not None else [])])


def assert_same(got: pa.Table, expected: pa.Table) -> None:
    assert got.num_rows == expected.num_rows
    for name in expected.column_names:
        left, right = got.column(name), expected.column(name)
        if pa.types.is_floating(right.type):
            np.testing.assert_allclose(left.to_numpy(), right.to_numpy(), rtol=1e-9)
        else:
            assert left.to_pylist() == right.to_pylist(), name


def test_tumbling_per_key_equals_one_group_by() -> None:
    table = events(3000, seed=1)
    got = run(window(), table, [700, 1500, 1501, 2900])
    assert got.column_names == ["device_id", "window_start", "window_end", *AGGREGATES]
    assert got.schema.field("window_start").type == pa.timestamp("us", tz="UTC")
    assert_same(got, reference(table, size_s=60, slide_s=60, keys=["device_id"]))


def test_out_of_order_within_lateness_gives_the_same_aggregates() -> None:
    table = events(4000, seed=2, jitter_s=20)
    ctx = EpochContext("p", 1)
    got = run(window(lateness="20s"), table, list(range(0, 4000, 333)), ctx)
    assert ctx.counters["dead_lettered"] == 0
    assert_same(got, reference(table, size_s=60, slide_s=60, keys=["device_id"]))


def test_sliding_windows_multi_key_and_global() -> None:
    table = events(2000, seed=3, jitter_s=4)
    got = run(
        window(size="30s", slide="10s", lateness="5s", key=["device_id", "site"]),
        table,
        [100, 999, 1500],
    )
    assert_same(got, reference(table, size_s=30, slide_s=10, keys=["device_id", "site"]))
    got = run(window(size="20s", slide="15s", lateness="5s", key=None), table, [1000])
    assert_same(got, reference(table, size_s=20, slide_s=15, keys=[]))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    cuts=st.lists(st.integers(0, 600), max_size=8),
    shape=st.sampled_from([(60, 60), (30, 10), (10, 10), (45, 20)]),
)
def test_any_batch_split_gives_the_same_windows(
    seed: int, cuts: list[int], shape: tuple[int, int]
) -> None:
    table = events(600, seed=seed, keys=3, jitter_s=8)
    size, slide = shape
    op = window(size=f"{size}s", slide=f"{slide}s", lateness="8s")
    assert_same(
        run(op, table, cuts), reference(table, size_s=size, slide_s=slide, keys=["device_id"])
    )


def test_window_closes_when_the_watermark_reaches_its_end() -> None:
    op = window(size="10s", aggregate={"n": "count(*)"})
    ctx = EpochContext("p", 1)
    first = op.apply(at([0, 3, 9]), ctx)
    assert first.num_rows == 0
    second = op.apply(at([10]), ctx)
    assert second.column("n").to_pylist() == [3]
    assert second.column("window_end").to_pylist()[0].timestamp() * SECOND == BASE + 10 * SECOND


def at(seconds: list[float], device: str = "d0") -> pa.Table:
    stamps = [BASE + int(s * SECOND) for s in seconds]
    return pa.table(
        {
            "device_id": [device] * len(stamps),
            "ts": pa.array(stamps, pa.timestamp("us", tz="UTC")),
            "temp": [float(s) for s in seconds],
            "__origin": [f"at{s}" for s in seconds],
        }
    )


def test_late_events_go_to_dead_letters_and_are_left_out() -> None:
    op = window(size="10s", lateness="2s", aggregate={"n": "count(*)"})
    ctx = EpochContext("p", 1)
    op.apply(at([1, 5, 11, 24]), ctx)  # watermark 22: [0,10) and [10,20) closed
    out = op.apply(at([8, 19, 21, 25]), ctx)
    assert out.num_rows == 0
    dead = pa.concat_tables(ctx.dead_letters)
    assert dead.column("stage").to_pylist() == ["window", "window"]
    assert dead.column("origin").to_pylist() == ["at8", "at19"]
    assert all(r.startswith("late: event time ") for r in dead.column("reason").to_pylist())
    assert ctx.counters["dead_lettered"] == 2 and ctx.counters["late"] == 2
    final = op.finish(ctx)
    assert final is not None and final.column("n").to_pylist() == [3]  # 21, 24, 25


def test_sliding_row_is_late_once_its_first_window_closed() -> None:
    op = window(size="10s", slide="5s", aggregate={"n": "count(*)"})
    ctx = EpochContext("p", 1)
    op.apply(at([0, 12]), ctx)  # closes windows ending at 5 and 10
    op.apply(at([6]), ctx)  # in [5,15) (open) but also [0,10) (closed): late
    assert ctx.counters["late"] == 1
    final = op.finish(ctx)
    assert final is not None
    assert final.column("n").to_pylist() == [1, 1]  # [5,15) and [10,20) hold only 12


def test_into_emits_side_output_and_lets_every_event_flow_on() -> None:
    op = window(size="10s", aggregate={"n": "count(*)"}, into="telemetry_10s")
    ctx = EpochContext("p", 1)
    first = at([1, 2, 12])
    assert op.apply(first, ctx).equals(first)
    late = at([3, 13, 25])
    assert op.apply(late, ctx).equals(late)  # the late row 3 still flows on
    assert op.finish(ctx) is None
    emitted = pa.concat_tables(ctx.side_outputs["telemetry_10s"])
    assert emitted.column("n").to_pylist() == [2, 2, 1]
    assert ctx.counters["late"] == 1 and ctx.counters["dead_lettered"] == 0
    assert len(ctx.dead_letters) == 1
    assert not op.replaces_stream


def test_state_round_trip_mid_stream_gives_identical_output() -> None:
    table = events(3000, seed=5, jitter_s=10)
    cuts = [400, 900, 1700, 2500]
    whole = run(window(size="30s", slide="10s", lateness="10s"), table, cuts)
    first = window(size="30s", slide="10s", lateness="10s")
    ctx = EpochContext("p", 1)
    head = [first.apply(table.slice(0, 400), ctx), first.apply(table.slice(400, 500), ctx)]
    blob = first.state()
    assert isinstance(blob, bytes)
    second = window(size="30s", slide="10s", lateness="10s")
    second.restore(blob)
    tail = run(second, table.slice(900), [800, 1600], ctx)
    assert pa.concat_tables([*head, tail]).equals(whole)


def test_state_is_bounded_by_the_window_span() -> None:
    op = window(size="1m", lateness="10s", aggregate={"n": "count(*)"})
    ctx = EpochContext("p", 1)
    table = events(60_000, seed=6, keys=20, step_s=0.1)  # ~10 rows/s over ~100 min
    sizes, buffered = [], []
    for start in range(0, table.num_rows, 1000):
        op.apply(table.slice(start, 1000), ctx)
        sizes.append(len(op.state() or b""))
        buffered.append(op.describe()["buffered_rows"])
    # at most one window + lateness (+ one batch) of rows is ever held
    assert max(buffered) <= 70 * 10 * 1.5 + 1000
    assert max(sizes[30:]) < 1.5 * max(sizes[:10])


def test_empty_batches() -> None:
    op = window(size="10s", aggregate={"n": "count(*)"})
    ctx = EpochContext("p", 1)
    assert op.finish(ctx) is None
    empty = op.apply(at([]), ctx)
    assert empty.num_rows == 0
    assert empty.column_names == ["device_id", "window_start", "window_end", "n"]
    op.apply(at([1, 2]), ctx)
    assert op.apply(at([]), ctx).num_rows == 0
    final = op.finish(ctx)
    assert final is not None and final.column("n").to_pylist() == [2]


def test_sql_errors_are_config_errors_naming_the_step() -> None:
    with pytest.raises(ConfigError, match=r"transforms\[3\]\.window\.aggregate\.m: invalid"):
        window(aggregate={"m": "avg(temp"})
    with pytest.raises(ConfigError, match=r"transforms\[3\]\.window: .*nope"):
        window(aggregate={"m": "avg(nope)"}).apply(at([1]), EpochContext("p", 1))
    with pytest.raises(ConfigError, match=r"transforms\[3\]\.window: "):
        window(aggregate={"m": "temp"}).apply(at([1]), EpochContext("p", 1))
    with pytest.raises(ConfigError, match="must be a timestamp"):
        op = WindowTransform(
            WindowSpec(size="1m", aggregate={"n": "count(*)"}, time="temp"), 0, None
        )
        op.apply(at([1]), EpochContext("p", 1))
    with pytest.raises(ConfigError, match="slide must not exceed"):
        window(size="10s", slide="20s")
    with pytest.raises(ConfigError, match="clashes"):
        window(aggregate={"window_start": "min(ts)"})


def test_missing_event_time_is_dead_lettered_with_its_own_reason() -> None:
    table = at([1, 2]).set_column(1, "ts", pa.array([BASE, None], pa.timestamp("us", tz="UTC")))
    op = window(size="10s", aggregate={"n": "count(*)"})
    ctx = EpochContext("p", 1)
    op.apply(table, ctx)
    dead = pa.concat_tables(ctx.dead_letters)
    assert dead.column("reason").to_pylist() == ["missing event time 'ts': the row has no window"]
    assert ctx.counters["dead_lettered"] == 1 and ctx.counters["late"] == 0
    final = op.finish(ctx)
    assert final is not None and final.column("n").to_pylist() == [1]


def test_aggregate_runtime_error_records_the_rows_and_continues() -> None:
    op = window(size="10s", aggregate={"n": "sum(CAST(device_id AS INTEGER))"}, key=None)
    ctx = EpochContext("p", 1)
    out = op.apply(pa.concat_tables([at([1]), at([12], device="7")]), ctx)
    assert out.num_rows == 0  # window [0,10) held a row whose cast failed
    assert "window aggregate failed" in ctx.dead_letters[0].column("reason")[0].as_py()
    assert ctx.counters["dead_lettered"] == 0  # those rows were already accounted for
    final = op.apply(at([25], device="3"), ctx)
    assert final.column("n").to_pylist() == [7]
