"""The generator's labelled telemetry through a pipeline: alert quality from the lake.

``sluice.sources.synthetic.telemetry`` (spikes, level shifts, stuck sensors, slow drifts and
an unlabelled regime change; labels ``is_anomaly`` and ``anomaly_kind`` pass through the
pipeline as ordinary columns) is scored by one ``online_anomaly`` model keyed by device.
Precision, recall and F1 come from the lake's ``<m>_anomaly``; ROC-AUC and average
precision from ``<m>_score``; recall per kind and the false positives from the flags.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from rich.console import Console

from sluice.evaluation.baselines import all_baselines
from sluice.evaluation.lake import DetectorSpec, run_table
from sluice.evaluation.report import Evaluation, FigureTable, fmt
from sluice.models.metrics import binary_metrics

FEATURES = ["temperature", "pressure", "vibration"]
SCHEMA = {
    "device_id": "string",
    "ts": "timestamp",
    "temperature": "double",
    "pressure": "double",
    "vibration": "double",
    "status": "string",
    "is_anomaly": "boolean",
    "anomaly_kind": "string",
}


def kind_breakdown(truth: np.ndarray, flags: np.ndarray, kinds: np.ndarray) -> dict[str, Any]:
    """Labelled events and recall per anomaly kind, and the false positives."""
    from sluice.sources.synthetic import KINDS

    out: dict[str, Any] = {}
    for kind in KINDS:
        here = truth & (kinds == kind)
        out[f"{kind}_events"] = int(here.sum())
        out[f"{kind}_recall"] = float(flags[here].mean()) if here.any() else float("nan")
    out["false_positives"] = int((flags & ~truth).sum())
    return out


def evaluate_generator(
    events: int = 200_000,
    devices: int = 50,
    seed: int = 7,
    *,
    river: bool = False,
    console: Console | None = None,
) -> Evaluation:
    """Alert and ranking quality of the lake's columns on the generator's injected anomalies."""
    from sluice.sources import synthetic

    started = time.perf_counter()
    data = synthetic.telemetry(events, n_devices=devices, seed=seed)
    run = run_table(
        "generator",
        data,
        SCHEMA,
        DetectorSpec(FEATURES, key="device_id"),
        event_time="ts",
        console=console,
    )
    truth = np.asarray(run.column("is_anomaly"), dtype=bool)
    kinds = np.asarray(run.table.column("anomaly_kind").to_pylist(), dtype=object)
    rows = {"online_anomaly": _metrics(truth, kinds, run.output("anomaly"), run.output("score"))}
    X = np.column_stack([run.column(f).astype(np.float64) for f in FEATURES])
    for b in all_baselines(run.column("device_id"), X, river=river):
        rows[b.name] = _metrics(truth, kinds, b.anomaly, b.score)
    return Evaluation(
        "generator",
        f"generated telemetry: {data.num_rows:,} events, {devices} devices, seed {seed}; "
        "online_anomaly on temperature, pressure, vibration keyed by device_id",
        {"events": data.num_rows, "detectors": rows, "pipeline_seconds": run.seconds},
        _tables(rows),
        time.perf_counter() - started,
    )


def _metrics(
    truth: np.ndarray, kinds: np.ndarray, flags: np.ndarray, scores: np.ndarray
) -> dict[str, Any]:
    flags = np.asarray(flags, dtype=bool)
    return {
        **binary_metrics(truth, flags, np.asarray(scores, dtype=np.float64)),
        "alert_rate": float(flags.mean()),
        **kind_breakdown(truth, flags, kinds),
    }


def _tables(rows: dict[str, dict[str, Any]]) -> list[FigureTable]:
    from sluice.sources.synthetic import KINDS

    quality = FigureTable(
        "Every event of an injected episode is a positive; alerts are the detector's own flags "
        "(no threshold fitted to the labels)",
        ["detector", "precision", "recall", "F1", "ROC-AUC", "average precision", "alert rate"],
        [
            [
                name,
                *(fmt(m.get(k, float("nan"))) for k in ("precision", "recall", "f1")),
                *(fmt(m.get(k, float("nan"))) for k in ("roc_auc", "average_precision")),
                fmt(100 * m["alert_rate"], 2) + "%",
            ]
            for name, m in rows.items()
        ],
    )
    first = next(iter(rows.values()))
    kinds = FigureTable(
        "Recall per kind of injected anomaly, and the false positives",
        ["detector", *(f"{k} (n={first[k + '_events']})" for k in KINDS), "false positives"],
        [
            [name, *(fmt(m[k + "_recall"]) for k in KINDS), fmt(m["false_positives"])]
            for name, m in rows.items()
        ],
    )
    return [quality, kinds]
