"""Incremental state checkpoints of ``online_anomaly`` as the number of keys grows.

1. Per total number of keys (1k, 10k, 100k, 1M, each in a fresh process): the model learns
   every key, then 10 epochs each touching 1,000 keys are checkpointed into a real
   SQLite checkpoint store. Reported: checkpoint time and bytes per epoch (the model's
   ``state()`` plus the commit), against the full snapshot every epoch that checkpoints
   wrote before (the baseline, measured in the same process), and peak RSS.
2. A pipeline (Parquet file → ``online_anomaly`` with ``max_keys`` = keys → lake) with 1k
   keys and with 1M keys (2M events, 2 features), fresh processes: events per second, peak
   RSS, and the memory each extra key costs. With ``--baseline-src DIR`` (the ``src`` of
   another checkout) the pipeline also runs that code with 1k and ``--baseline-keys`` keys,
   alternating with this one.

Usage: python benchmarks/state_checkpoint.py [--quick] [--baseline-src DIR]
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


def run_pipeline(work: Path, keys: int, events: int, src: str | None = None) -> Measured:
    """`sluice run --until-idle` over ``events`` rows spread round robin over ``keys`` keys
    (``src``: the code to import instead of this checkout's)."""
    data = work / f"keys_{keys}.parquet"
    if not data.exists():
        rng = np.random.default_rng(1)
        pq.write_table(_table(np.arange(events) % keys, rng), data)
    path = work / f"keys_{keys}.yaml"
    path.write_text(PIPELINE.format(data=data, max_keys=max(keys, 1000)))
    return run_sluice(path, work / f"home_{keys}", src)


def main() -> None:
    """Measure and write benchmarks/results/state_checkpoint.md."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="10k/100k keys, small pipelines")
    parser.add_argument("--keys", type=int, help=argparse.SUPPRESS)  # one child measurement
    parser.add_argument("--sizes", type=int, nargs="+", help="total keys to measure")
    parser.add_argument("--baseline-src", help="src directory of the code to compare against")
    parser.add_argument("--baseline-keys", type=int, default=100_000, help="keys, baseline")
    args = parser.parse_args()
    if args.keys:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(measure_keys(args.keys, Path(tmp))))
        return
    sizes = args.sizes or (
        [1_000, 10_000, 100_000] if args.quick else [1_000, 10_000, 100_000, 1_000_000]
    )
    rows = []
    for total in sizes:
        out = subprocess.run(
            [python(), __file__, "--keys", str(total)], check=True, capture_output=True, text=True
        ).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(rows[-1])
    big = sizes[-1]
    events = max(2 * big, 1_000_000)
    baseline = None
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        few = run_pipeline(work, 1_000, events)
        many = run_pipeline(work, big, events)
        print(f"1k keys {events / few.seconds:,.0f} ev/s; {big:,} {events / many.seconds:,.0f}")
        if args.baseline_src:
            base_few = run_pipeline(work, 1_000, events, args.baseline_src)
            base_many = run_pipeline(work, args.baseline_keys, events, args.baseline_src)
            mine = run_pipeline(work, args.baseline_keys, events)
            baseline = (base_few, base_many, mine, args.baseline_keys)
    write_report(rows, few, many, big, events, baseline)


def _pipeline_row(label: str, keys: int, events: int, few: Measured, many: Measured) -> str:
    per_key = (many.peak_rss_mb - few.peak_rss_mb) * 1e6 / max(keys - 1_000, 1)
    return (
        f"| {label} | {events / few.seconds:,.0f} ev/s | {few.peak_rss_mb:,.0f} MB | "
        f"{keys:,} | {events / many.seconds:,.0f} ev/s | {many.peak_rss_mb:,.0f} MB | "
        f"**{few.seconds / many.seconds:.2f}x** | {per_key:,.0f} B |"
    )


def write_report(
    rows: list[dict[str, float]],
    few: Measured,
    many: Measured,
    big: int,
    events: int,
    baseline: tuple[Measured, Measured, Measured, int] | None = None,
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
        "| keys | checkpoint / epoch (median, max) | bytes / epoch | "
        f"vs {int(rows[0]['keys']):,} keys | "
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
    head = [
        "| code | 1,000 keys | peak RSS | keys | rate | peak RSS | rate vs 1,000 keys | "
        "RSS per extra key |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        "",
        f"Pipeline, {events:,} events round robin over the keys (Parquet → `online_anomaly` "
        "with 2 features, `max_keys` = keys → lake), fresh processes:",
        "",
        *head,
        _pipeline_row("this code", big, events, few, many),
        "",
        f"{big:,} keys / 1,000 keys: **{ratio:.2f}x** (target >= 0.5x), peak RSS "
        f"{many.peak_rss_mb / 1024:.2f} GB (target under 3 GB).",
        "",
    ]
    if baseline is not None:
        base_few, base_many, mine, keys = baseline
        lines += [
            f"Before and after in the same invocation, {keys:,} keys (baseline: the code "
            "before per-key memory followed what keys learned):",
            "",
            *head,
            _pipeline_row("baseline", keys, events, base_few, base_many),
            _pipeline_row("this code", keys, events, few, mine),
            "",
        ]
    write_result("state_checkpoint", lines)


if __name__ == "__main__":
    sys.exit(main())
