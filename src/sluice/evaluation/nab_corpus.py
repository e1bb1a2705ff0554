"""NAB through one keyed pipeline: all series in one stream, scored from the lake's columns.

Every NAB file becomes the events of one key (``series``) in a single JSON-lines input,
interleaved in timestamp order; one ``online_anomaly`` model with default settings, keyed by
series, scores the stream; each series' ``<m>_onset`` (the primary figure) and ``<m>_score``
columns are read back from the lake in the series' own order and NAB-scored (three
profiles, per category). Baselines score the same per-series values.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from rich.console import Console

from sluice.evaluation.baselines import all_baselines
from sluice.evaluation.lake import DetectorSpec, run_table
from sluice.evaluation.nab import PROFILES, NabReport, NabSeries, load_nab, score_nab
from sluice.evaluation.report import Evaluation, FigureTable, fmt, pct

SCHEMA = {"series": "string", "row": "long", "timestamp": "timestamp", "value": "double"}


def nab_input(series: list[NabSeries]) -> pa.Table:
    """One table of every series' rows, ordered by timestamp (series order, then row, on ties)."""
    names = np.concatenate([np.full(len(s.values), s.name, dtype=object) for s in series])
    rows = np.concatenate([np.arange(len(s.values), dtype=np.int64) for s in series])
    index = np.concatenate([np.full(len(s.values), i) for i, s in enumerate(series)])
    ts = np.concatenate([_timestamps(s) for s in series])
    values = np.concatenate([s.values for s in series])
    order = np.lexsort((rows, index, ts))
    return pa.table(
        {
            "series": pa.array(names[order], pa.string()),
            "row": pa.array(rows[order]),
            "timestamp": pa.array(ts[order], pa.timestamp("us")),
            "value": pa.array(values[order], pa.float64()),
        }
    )


def _timestamps(s: NabSeries) -> np.ndarray:
    if s.timestamps is not None:
        return s.timestamps.astype("datetime64[us]")
    start = np.datetime64("2020-01-01T00:00:00", "us")
    return start + np.arange(len(s.values)) * np.timedelta64(5, "m")


def per_series(
    series: list[NabSeries], names: np.ndarray, rows: np.ndarray, values: np.ndarray
) -> dict[str, np.ndarray]:
    """Split a per-event column into each series' values in its own row order."""
    out = {}
    for s in series:
        here = np.flatnonzero(names == s.name)
        ordered = here[np.argsort(rows[here], kind="stable")]
        if len(ordered) != len(s.values):
            raise ValueError(f"{s.name}: {len(ordered)} scored rows for {len(s.values)}")
        out[s.name] = np.asarray(values[ordered], dtype=np.float64)
    return out


def evaluate_nab_corpus(
    root: Path | None = None,
    *,
    river: bool = False,
    categories: list[str] | None = None,
    batch: dict[str, Any] | None = None,
    console: Console | None = None,
) -> Evaluation:
    """NAB scores of the lake's ``det_onset`` and ``det_score`` (and of the baselines)."""
    started = time.perf_counter()
    series = load_nab(root, categories)
    data = nab_input(series)
    run = run_table(
        "nab",
        data,
        SCHEMA,
        DetectorSpec(["value"], key="series"),
        event_time="timestamp",
        batch=batch,
        console=console,
    )
    names, rows = run.column("series"), run.column("row")
    detectors: dict[str, np.ndarray] = {
        "online_anomaly: det_onset": run.output("onset"),
        "online_anomaly: det_score": run.output("score"),
    }
    X = data.column("value").to_numpy().reshape(-1, 1)
    keys = data.column("series").to_numpy(zero_copy_only=False)
    for b in all_baselines(keys, X, river=river):
        detectors[b.name] = _to_lake_order(run.table, b.score)
    reports = [
        score_nab(series, per_series(series, names, rows, scores), detector=name)
        for name, scores in detectors.items()
    ]
    alert_rate = float(np.mean(run.output("anomaly")))
    return Evaluation(
        "nab",
        f"NAB: {len(series)} files, {data.num_rows:,} rows in one pipeline keyed by series "
        "(online_anomaly, default settings); NAB-scored from the lake's columns",
        _figures(reports, alert_rate, run.seconds),
        _tables(reports, alert_rate),
        time.perf_counter() - started,
    )


def _to_lake_order(lake: pa.Table, scores: np.ndarray) -> np.ndarray:
    """Baseline scores (input order) reordered like the lake table (sorted by ``seq``)."""
    seq = lake.column("seq").to_numpy()
    return np.asarray(scores)[seq]


def _figures(reports: list[NabReport], alert_rate: float, seconds: float) -> dict[str, Any]:
    return {
        "detectors": {r.detector: r.as_dict()["profiles"] for r in reports},
        "alert_rate": alert_rate,
        "pipeline_seconds": seconds,
        "files": reports[0].files,
        "rows": reports[0].rows,
    }


def _tables(reports: list[NabReport], alert_rate: float) -> list[FigureTable]:
    scores = FigureTable(
        "NAB scores (0 = null detector, 100 = perfect; threshold swept per profile)",
        ["detector", *PROFILES],
        [[r.detector, *(fmt(r.profiles[p].score, 1) for p in PROFILES)] for r in reports],
    )
    primary = reports[0]
    cats = list(primary.profiles["standard"].categories)
    per_cat = FigureTable(
        f"Per category, {primary.detector} (categories without windows show the raw "
        "false-positive cost)",
        ["profile", *cats],
        [[p, *(fmt(r.categories[c], 1) for c in cats)] for p, r in primary.profiles.items()],
    )
    counts = FigureTable(
        f"Windows found and false positives at the swept threshold, {primary.detector}; "
        f"det_anomaly alert rate {pct(alert_rate)}",
        ["profile", "threshold", "windows found", "windows missed", "false positives"],
        [
            [p, fmt(r.threshold, 4), fmt(r.tp), fmt(r.fn), fmt(r.fp)]
            for p, r in primary.profiles.items()
        ],
    )
    return [scores, per_cat, counts]
