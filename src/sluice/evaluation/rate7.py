"""``target_alert_rate: 0.07`` on data with about 7% anomalies: is the alert rate near 7%?

The multivariate records of :mod:`sluice.evaluation.multivariate` with 7% planted outliers,
run through a pipeline whose ``online_anomaly`` model sets ``target_alert_rate: 0.07``; the
figure is the share of events the lake's ``<m>_anomaly`` flags (expected between half and
twice the target), with precision and recall against the planted outliers.
"""

from __future__ import annotations

import time

import numpy as np
from rich.console import Console

from sluice.evaluation.multivariate import MultivariateSpec, ranking, run_multivariate
from sluice.evaluation.report import Evaluation, FigureTable, fmt, pct

TARGET = 0.07


def evaluate_rate7(
    spec: MultivariateSpec = MultivariateSpec(outlier_rate=TARGET),
    *,
    target: float = TARGET,
    console: Console | None = None,
) -> Evaluation:
    """The alert rate of ``target_alert_rate: target`` on records with that share of outliers."""
    started = time.perf_counter()
    data, run = run_multivariate(spec, {"target_alert_rate": target}, console)
    truth = np.asarray(run.column("is_outlier"), dtype=bool)
    kinds = np.asarray(run.table.column("outlier_kind").to_pylist(), dtype=object)
    m = ranking(truth, kinds, run.output("anomaly"), run.output("score"))
    within = target / 2 <= m["alert_rate"] <= target * 2
    table = FigureTable(
        f"online_anomaly with target_alert_rate: {target} on records with "
        f"{pct(truth.mean())} outliers (expected: {pct(target / 2)} to {pct(2 * target)})",
        ["alert rate", "within 0.5x-2x", "precision", "recall", "F1", "ROC-AUC"],
        [
            [
                pct(m["alert_rate"]),
                "yes" if within else "no",
                *(fmt(m[k]) for k in ("precision", "recall", "f1")),
                fmt(m.get("roc_auc", float("nan"))),
            ]
        ],
    )
    return Evaluation(
        "rate7",
        f"target_alert_rate {target} on {data.num_rows:,} multivariate records "
        f"({spec.keys} keys) with {pct(truth.mean())} planted outliers",
        {"target": target, "outlier_rate": float(truth.mean()), "within": within, **m},
        [table],
        time.perf_counter() - started,
    )
