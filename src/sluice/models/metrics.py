"""Classification metrics for labelled evaluation (precision, recall, F1, ROC-AUC, AP)."""

from __future__ import annotations

import numpy as np


def binary_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, scores: np.ndarray | None = None
) -> dict[str, float]:
    """Precision, recall and F1 of ``y_pred``; ROC-AUC and average precision of ``scores``."""
    from sklearn.metrics import (
        average_precision_score,
        f1_score,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    y_true = np.asarray(y_true, dtype=bool)
    y_pred = np.asarray(y_pred, dtype=bool)
    out = {
        "precision": float(precision_score(y_true, y_pred, zero_division=0)),
        "recall": float(recall_score(y_true, y_pred, zero_division=0)),
        "f1": float(f1_score(y_true, y_pred, zero_division=0)),
        "positives": int(y_true.sum()),
        "predicted_positives": int(y_pred.sum()),
    }
    if scores is not None and 0 < y_true.sum() < len(y_true):
        finite = np.nan_to_num(np.asarray(scores, dtype=np.float64))
        out["roc_auc"] = float(roc_auc_score(y_true, finite))
        out["average_precision"] = float(average_precision_score(y_true, finite))
    return out
