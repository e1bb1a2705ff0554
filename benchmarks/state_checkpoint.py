"""Incremental state checkpoints of ``online_anomaly`` as the number of keys grows.

1. Per total number of keys (10k, 100k, 1M, each in a fresh process): the model learns
   every key, then 10 epochs each touching 1,000 keys are checkpointed into a real
   SQLite checkpoint store. Reported: checkpoint time and bytes per epoch (the model's
   ``state()`` plus the commit), against the full snapshot every epoch that checkpoints
   wrote before (the baseline, measured in the same process), and peak RSS.
2. A pipeline (Parquet file → ``online_anomaly`` with ``max_keys`` = keys → lake) with 1k
   keys and with 1M keys, fresh processes: events per second and peak RSS.

Usage: python benchmarks/state_checkpoint.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from common import Measured, machine, python, run_sluice, write_result

TOUCHED = 1_000
NOT_A_MILLION = (
    "1M keys were not measured here: a key holds up to 12 KB in memory with 2 features "
    "(statistics 0.6 KB, calibration histograms 3.7 KB, context bitset 2 KB and the seasonal "
    "ring 5.8 KB, the last two mapped page by page), so 1M keys take about 10 GB, more than "
    "this shared machine can spare; checkpoints no longer depend on the number of keys, but "
    "memory does."
)
EPOCHS = 10


def _table(keys: np.ndarray, rng: np.random.Generator) -> pa.Table:
    return pa.table(
        {
            "device_id": pa.array(keys.astype(str)),
            "temperature": rng.normal(20.0, 1.0, keys.size),
            "pressure": rng.normal(1.0, 0.1, keys.size),
        }
    )


def measure_keys(total: int, work: Path) -> dict[str, float]:
    """In this process: learn ``total`` keys, then checkpoint epochs touching 1,000 keys."""
    from sluice.config.models import ModelConfig
    from sluice.core.settings import Settings
    from sluice.models.base import ModelContext, build_model
    from sluice.storage.checkpoints import CheckpointStore, StateDelta
    from sluice.storage.db import get_engine

    settings = Settings(home=work).ensure()
    model = build_model(
        ModelConfig.model_validate(
            {
                "name": "det",
                "type": "online_anomaly",
                "features": ["temperature", "pressure"],
                "key": "device_id",
                "max_keys": max(total, 1000),
            }
        ),
        ModelContext("bench", settings),
    )
    model.start()
    store = CheckpointStore(get_engine(str(settings.metadata_url)))
    rng = np.random.default_rng(0)
    all_keys = np.arange(total)
    for _ in range(2):  # every key twice, 100k rows a batch
        for i in range(0, total, 100_000):
            model.score(_table(all_keys[i : i + 100_000], rng))
    epoch = 1
    store.commit("bench", epoch, {}, {"model:det": model.state()})  # the first snapshot
    model.committed()
    times, sizes = [], []
    for _ in range(EPOCHS):
        touched = rng.choice(all_keys, TOUCHED, replace=False)
        model.score(_table(np.repeat(touched, 2), rng))
        epoch += 1
        started = time.perf_counter()
        state = model.state()
        store.commit("bench", epoch, {}, {"model:det": state})
        model.committed()
        times.append(time.perf_counter() - started)
        sizes.append(len(state.data if isinstance(state, StateDelta) else state or b""))
    started = time.perf_counter()  # the baseline: the whole state, as every epoch did before
    detector = model.detector  # type: ignore[attr-defined]
    full = detector.get_state()
    store.commit("bench_full", epoch, {}, {"model:det": full})
    full_time = time.perf_counter() - started
    restore_started = time.perf_counter()
    loaded = store.load("bench")
    fresh = build_model(model.config, ModelContext("bench", settings))
    fresh.restore(loaded.states["model:det"])
    fresh.restore_deltas(loaded.deltas.get("model:det", []))
    restore_time = time.perf_counter() - restore_started
    return {
        "keys": total,
        "ckpt_ms": float(np.median(times)) * 1000,
        "ckpt_max_ms": float(np.max(times)) * 1000,
        "ckpt_bytes": float(np.median(sizes)),
        "full_ms": full_time * 1000,
        "full_bytes": len(full),
        "restore_s": restore_time,
        "deltas": len(loaded.deltas.get("model:det", [])),
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


PIPELINE = """\
name: keys
source: {{type: file, path: "{data}", format: parquet}}
models:
  - {{name: det, type: online_anomaly, features: [temperature, pressure], key: device_id,
      max_keys: {max_keys}}}
sinks:
  - {{type: lake, table: scored, partition_by: none}}
"""


def run_pipeline(work: Path, keys: int, events: int) -> Measured:
    """`sluice run --until-idle` over ``events`` rows spread round robin over ``keys`` keys."""
    data = work / f"keys_{keys}.parquet"
    rng = np.random.default_rng(1)
    pq.write_table(_table(np.arange(events) % keys, rng), data)
    path = work / f"keys_{keys}.yaml"
    path.write_text(PIPELINE.format(data=data, max_keys=max(keys, 1000)))
    return run_sluice(path, work / f"home_{keys}")


def main() -> None:
    """Measure and write benchmarks/results/state_checkpoint.md."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="10k/100k keys, small pipelines")
    parser.add_argument("--keys", type=int, help=argparse.SUPPRESS)  # one child measurement
    parser.add_argument("--sizes", type=int, nargs="+", help="total keys to measure")
    args = parser.parse_args()
    if args.keys:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(measure_keys(args.keys, Path(tmp))))
        return
    sizes = args.sizes or ([10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000])
    rows = []
    for total in sizes:
        out = subprocess.run(
            [python(), __file__, "--keys", str(total)], check=True, capture_output=True, text=True
        ).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(rows[-1])
    big = sizes[-1]
    events = max(2 * big, 1_000_000)
    with tempfile.TemporaryDirectory() as tmp:
        few = run_pipeline(Path(tmp), 1_000, events)
        many = run_pipeline(Path(tmp), big, events)
    write_report(rows, few, many, big, events)


def write_report(
    rows: list[dict[str, float]], few: Measured, many: Measured, big: int, events: int
) -> None:
    """Write the markdown section."""
    first = rows[0]["ckpt_ms"]
    lines = [
        "## Incremental state checkpoints (`benchmarks/state_checkpoint.py`)",
        "",
        f"Machine: {machine()}.",
        "",
        f"`online_anomaly` (2 features) after learning every key twice; then {EPOCHS} epochs "
        f"each touching {TOUCHED:,} keys, checkpointed into SQLite (`state()` + commit). "
        "Baseline: the whole state in one snapshot, as every epoch wrote it before.",
        "",
        "| keys | checkpoint / epoch (median, max) | bytes / epoch | vs 10k keys | "
        "baseline: full snapshot | bytes | restore (snapshot + deltas) | peak RSS |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {int(r['keys']):,} | {r['ckpt_ms']:.1f} ms ({r['ckpt_max_ms']:.1f} ms) | "
            f"{r['ckpt_bytes'] / 1e6:.2f} MB | {r['ckpt_ms'] / first:.2f}x | "
            f"{r['full_ms']:,.0f} ms | {r['full_bytes'] / 1e6:,.1f} MB | "
            f"{r['restore_s']:.2f} s ({int(r['deltas'])} deltas) | {r['rss_mb']:,.0f} MB |"
        )
    ratio = few.seconds / many.seconds
    lines += [
        "",
        f"Pipeline, {events:,} events round robin over the keys (Parquet → `online_anomaly`, "
        "`max_keys` = keys → lake), fresh processes:",
        "",
        "| keys | rate | peak RSS |",
        "|---:|---:|---:|",
        f"| 1,000 | {events / few.seconds:,.0f} ev/s | {few.peak_rss_mb:,.0f} MB |",
        f"| {big:,} | {events / many.seconds:,.0f} ev/s | {many.peak_rss_mb:,.0f} MB |",
        "",
        f"{big:,} keys / 1,000 keys: **{ratio:.2f}x** (target >= 0.5x, under 3 GB RSS).",
        "",
    ]
    if big < 1_000_000:
        lines += [NOT_A_MILLION, ""]
    write_result("state_checkpoint", lines)


if __name__ == "__main__":
    sys.exit(main())
