"""KafkaSource.split: one batch per partition, rows in their order, whatever the interleaving."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from sluice.config.models import SourceConfig
from sluice.sources.base import SourceBatch, SourceContext
from sluice.sources.kafka import OFFSET_COLUMN, TASK_COLUMN, KafkaSource


def _batch(partitions: np.ndarray) -> SourceBatch:
    """Rows tagged with their partition, numbered per partition like Kafka offsets."""
    offsets = np.zeros(len(partitions), np.int64)
    for p in np.unique(partitions):
        offsets[partitions == p] = np.arange(int((partitions == p).sum()))
    keys = [f"t/{p}" for p in partitions]
    table = pa.table(
        {
            "_raw": [f"{k}@{o}" for k, o in zip(keys, offsets, strict=True)],
            TASK_COLUMN: keys,
            OFFSET_COLUMN: offsets,
        }
    )
    # two polls, as the runner concatenates them (each with its own dictionary of keys)
    half = len(partitions) // 2
    data = pa.concat_tables(
        [
            part.set_column(1, TASK_COLUMN, part[TASK_COLUMN].combine_chunks().dictionary_encode())
            for part in (table.slice(0, half), table.slice(half))
        ]
    )
    return SourceBatch(data, "json", {"offsets": {"t/0": 10**6}})


@pytest.mark.parametrize("run", [1, 3, 2_500], ids=["interleaved", "short runs", "long runs"])
def test_split_keeps_each_partitions_rows_in_order(tmp_path: str, run: int) -> None:
    source = KafkaSource(
        SourceConfig(type="kafka", topic="t"), SourceContext(pipeline="p", home=str(tmp_path))
    )
    rng = np.random.default_rng(7)
    partitions = np.repeat(rng.permutation(np.arange(15_000 // run) % 3), run)
    parts = source.split(_batch(partitions))
    assert sorted(parts) == ["t/0", "t/1", "t/2"]
    for key, (part, offsets) in parts.items():
        count = int((partitions == int(key[-1])).sum())
        assert part.data["_raw"].to_pylist() == [f"{key}@{o}" for o in range(count)]
        assert offsets.to_pylist() == list(range(count))
        assert OFFSET_COLUMN not in part.data.column_names
        end = 10**6 if key == "t/0" else count
        assert part.position == {"offsets": {key: end}}
