"""Synthetic i.i.d. multivariate records with planted outliers, ranked from the lake's score.

Per key, records are drawn independently from a correlated Gaussian (per-key means, scales and
a two-factor correlation structure); there is no time structure. From each key's event
``CLEAN_START`` on, a share of records are outliers of two kinds:

* ``extreme``: one or two features moved by 4-8 standard deviations;
* ``correlation``: the most correlated pair of features pushed 1.5-2.5 standard deviations
  against their correlation; every value stays inside the normal range.

Keys are interleaved at random. The figures: ROC-AUC and average precision of the lake's
``<m>_score`` (overall and per kind) beside the per-key rolling z-score and River
HalfSpaceTrees on the same records, and the alert rate and precision/recall of ``<m>_anomaly``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from rich.console import Console

from sluice.evaluation.baselines import all_baselines
from sluice.evaluation.lake import DetectorSpec, LakeRun, run_table
from sluice.evaluation.report import Evaluation, FigureTable, fmt, pct
from sluice.models.metrics import binary_metrics

FEATURES = [f"x{i}" for i in range(5)]
SCHEMA = {
    "key": "string",
    "ts": "timestamp",
    **dict.fromkeys(FEATURES, "double"),
    "is_outlier": "boolean",
    "outlier_kind": "string",
}
KINDS = ("extreme", "correlation")
CLEAN_START = 50


@dataclass(frozen=True)
class MultivariateSpec:
    """Size, outlier share and seed of a multivariate data set."""

    keys: int = 20
    per_key: int = 5000
    outlier_rate: float = 0.015
    seed: int = 11


def _key_records(rng: np.random.Generator, spec: MultivariateSpec) -> dict[str, np.ndarray]:
    d, n = len(FEATURES), spec.per_key
    loadings = rng.normal(size=(d, 2)) * rng.uniform(0.8, 1.5, size=(d, 1))
    cov = loadings @ loadings.T + np.diag(rng.uniform(0.05, 0.3, size=d))
    sd = np.sqrt(np.diag(cov))
    corr = cov / np.outer(sd, sd)
    mean = rng.uniform(-100, 100, size=d)
    scale = np.exp(rng.uniform(np.log(0.1), np.log(50), size=d))
    z = rng.multivariate_normal(np.zeros(d), corr, size=n)
    kind = np.full(n, None, dtype=object)
    planted = CLEAN_START + np.flatnonzero(rng.random(n - CLEAN_START) < spec.outlier_rate)
    kind[planted] = np.where(rng.random(planted.size) < 0.5, *KINDS)
    off = corr - np.eye(d)
    i, j = np.unravel_index(int(np.argmax(np.abs(off))), off.shape)
    for row in planted:
        if kind[row] == "extreme":
            cols = rng.choice(d, size=rng.integers(1, 3), replace=False)
            z[row, cols] = rng.choice([-1.0, 1.0], size=cols.size) * rng.uniform(4, 8, cols.size)
        else:
            a = rng.uniform(1.5, 2.5) * rng.choice([-1.0, 1.0])
            z[row, i], z[row, j] = a, -np.sign(corr[i, j]) * a
    return {"X": mean + scale * z, "kind": kind}


def multivariate_records(spec: MultivariateSpec = MultivariateSpec()) -> pa.Table:
    """The records of every key, interleaved at random, with ``is_outlier``/``outlier_kind``."""
    rng = np.random.default_rng(spec.seed)
    parts = [_key_records(rng, spec) for _ in range(spec.keys)]
    slot = np.repeat(np.arange(spec.keys), spec.per_key)
    order = rng.permutation(slot.size)
    key_of = slot[order]
    nth = np.empty(slot.size, dtype=np.int64)  # the i-th event of its key, in stream order
    for k in range(spec.keys):
        nth[key_of == k] = np.arange(spec.per_key)
    X = np.stack([p["X"] for p in parts])[key_of, nth]
    kind = np.stack([p["kind"] for p in parts])[key_of, nth]
    start = np.datetime64("2026-01-01T00:00:00", "us")
    columns: dict[str, Any] = {
        "key": pa.array([f"k{k:03d}" for k in key_of], pa.string()),
        "ts": pa.array(start + np.arange(slot.size) * np.timedelta64(1, "s"), pa.timestamp("us")),
    }
    columns.update({f: pa.array(X[:, c], pa.float64()) for c, f in enumerate(FEATURES)})
    columns["is_outlier"] = pa.array(kind != None, pa.bool_())  # noqa: E711 - elementwise
    columns["outlier_kind"] = pa.array(kind.tolist(), pa.string())
    return pa.table(columns)


def run_multivariate(
    spec: MultivariateSpec, options: dict[str, Any] | None = None, console: Console | None = None
) -> tuple[pa.Table, LakeRun]:
    """The records and the lake table of ``online_anomaly`` (with ``options``) over them."""
    data = multivariate_records(spec)
    detector = DetectorSpec(FEATURES, key="key", options=options or {})
    return data, run_table("multivariate", data, SCHEMA, detector, event_time="ts", console=console)


def ranking(truth: np.ndarray, kinds: np.ndarray, flags: Any, scores: Any) -> dict[str, Any]:
    """Alert metrics, ROC-AUC/AP overall and ROC-AUC per outlier kind (against the normals)."""
    from sklearn.metrics import roc_auc_score

    scores = np.nan_to_num(np.asarray(scores, dtype=np.float64))
    out: dict[str, Any] = binary_metrics(truth, np.asarray(flags, dtype=bool), scores)
    out["alert_rate"] = float(np.mean(flags))
    for kind in KINDS:
        rows = ~truth | (kinds == kind)
        pos = truth[rows]
        ok = 0 < pos.sum() < pos.size
        out[f"{kind}_roc_auc"] = float(roc_auc_score(pos, scores[rows])) if ok else float("nan")
    return out


def evaluate_multivariate(
    spec: MultivariateSpec = MultivariateSpec(),
    *,
    river: bool = False,
    console: Console | None = None,
) -> Evaluation:
    """ROC-AUC of the lake's score beside the baselines' on the same records."""
    started = time.perf_counter()
    data, run = run_multivariate(spec, console=console)
    truth = np.asarray(run.column("is_outlier"), dtype=bool)
    kinds = np.asarray(run.table.column("outlier_kind").to_pylist(), dtype=object)
    rows = {"online_anomaly": ranking(truth, kinds, run.output("anomaly"), run.output("score"))}
    X = np.column_stack([run.column(f) for f in FEATURES])
    for b in all_baselines(run.column("key"), X, river=river):
        rows[b.name] = ranking(truth, kinds, b.anomaly, b.score)
    return Evaluation(
        "multivariate",
        f"i.i.d. multivariate records: {spec.keys} keys x {spec.per_key:,} records, "
        f"{len(FEATURES)} correlated features, {int(truth.sum()):,} planted outliers "
        f"({pct(truth.mean())}), seed {spec.seed}",
        {"records": data.num_rows, "outliers": int(truth.sum()), "detectors": rows},
        [_table(rows)],
        time.perf_counter() - started,
    )


def _table(rows: dict[str, dict[str, Any]]) -> FigureTable:
    return FigureTable(
        "Ranking from the score (ROC-AUC, average precision) and the detector's own alerts",
        [
            "detector",
            "ROC-AUC",
            "AP",
            *(f"ROC-AUC {k}" for k in KINDS),
            "alert rate",
            "precision",
            "recall",
        ],
        [
            [
                name,
                fmt(m.get("roc_auc", float("nan"))),
                fmt(m.get("average_precision", float("nan"))),
                *(fmt(m[f"{k}_roc_auc"]) for k in KINDS),
                pct(m["alert_rate"]),
                fmt(m["precision"]),
                fmt(m["recall"]),
            ]
            for name, m in rows.items()
        ],
    )
