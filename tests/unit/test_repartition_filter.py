"""OriginFilter: records forwarded twice to the repartition topic are processed once."""

from __future__ import annotations

import pyarrow as pa

from sluice.sources.repartition import ORIGIN_OFFSET, ORIGIN_PARTITION, OriginFilter


def _batch(origins: list[tuple[str, int]]) -> pa.Table:
    return pa.table(
        {
            "v": list(range(len(origins))),
            ORIGIN_PARTITION: [p for p, _ in origins],
            ORIGIN_OFFSET: pa.array([o for _, o in origins], pa.int64()),
        }
    )


def test_repeats_within_and_across_batches_are_dropped() -> None:
    origins = OriginFilter()
    first, dropped = origins.apply(_batch([("in/0", 0), ("in/1", 0), ("in/0", 1), ("in/0", 2)]))
    assert (first["v"].to_pylist(), dropped) == ([0, 1, 2, 3], 0)
    # the forwarder crashed after producing in/0@1..2 and sent them again, then went on
    again, dropped = origins.apply(_batch([("in/0", 1), ("in/0", 2), ("in/0", 3), ("in/1", 1)]))
    assert (again["v"].to_pylist(), dropped) == ([2, 3], 2)
    inside, dropped = origins.apply(_batch([("in/1", 2), ("in/1", 1), ("in/1", 2), ("in/1", 3)]))
    assert (inside["v"].to_pylist(), dropped) == ([0, 3], 2)


def test_high_marks_round_trip_through_the_checkpoint() -> None:
    origins = OriginFilter()
    origins.apply(_batch([("in/0", 5), ("in/2", 9)]))
    restored = OriginFilter()
    restored.restore(origins.state())
    kept, dropped = restored.apply(_batch([("in/0", 5), ("in/2", 10)]))
    assert (kept["v"].to_pylist(), dropped) == ([1], 1)


def test_tables_without_origins_pass_untouched() -> None:
    table = pa.table({"v": [1, 2]})
    assert OriginFilter().apply(table) == (table, 0)
