"""Evaluation harnesses: quality figures from what a pipeline writes to the lake.

Each harness writes its data to a file and a pipeline file beside it, runs the pipeline with
the real runner until idle, and computes its figures from the lake table's model columns
(never from a detector's internal arrays). This package sits above ``runners`` (it runs
pipelines) and apart from the scoring path.

* ``nab`` — the 58 NAB series in one stream keyed by series, NAB-scored from ``<m>_onset``;
* ``generator`` — the generator's labelled telemetry: precision/recall/F1, ROC-AUC;
* ``multivariate`` — i.i.d. correlated records with planted outliers: ROC-AUC;
* ``null`` — anomaly-free streams of nine shapes: alert rates by phase of a key's life;
* ``rate7`` — ``target_alert_rate: 0.07`` on data with 7% outliers: the alert rate.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from sluice.core.errors import ConfigError
from sluice.evaluation.report import Evaluation, FigureTable

DATASETS = ("nab", "generator", "multivariate", "null", "rate7")

__all__ = ["DATASETS", "Evaluation", "FigureTable", "evaluate_dataset"]


def evaluate_dataset(
    dataset: str,
    *,
    nab_path: str | Path | None = None,
    river: bool = False,
    console: Console | None = None,
) -> Evaluation:
    """Run one harness with its default size; ``river`` adds River HalfSpaceTrees."""
    if dataset == "nab":
        from sluice.evaluation.nab_corpus import evaluate_nab_corpus

        root = Path(nab_path) if nab_path else None
        return evaluate_nab_corpus(root, river=river, console=console)
    if dataset == "generator":
        from sluice.evaluation.generator import evaluate_generator

        return evaluate_generator(river=river, console=console)
    if dataset == "multivariate":
        from sluice.evaluation.multivariate import evaluate_multivariate

        return evaluate_multivariate(river=river, console=console)
    if dataset == "null":
        from sluice.evaluation.null_suite import evaluate_null

        return evaluate_null(river=river, console=console)
    if dataset == "rate7":
        from sluice.evaluation.rate7 import evaluate_rate7

        return evaluate_rate7(console=console)
    raise ConfigError(f"unknown dataset {dataset!r}; available: {', '.join(DATASETS)}")
