"""Turn raw model outputs (labels, probabilities, scores) into Sluice's output columns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa


@dataclass
class Outputs:
    """What a model produced for a batch; unset fields add no column."""

    label: np.ndarray | None = None
    proba: np.ndarray | None = None
    score: np.ndarray | None = None
    anomaly: np.ndarray | None = None
    reason: np.ndarray | None = None


def from_probabilities(probabilities: np.ndarray, classes: list[str] | np.ndarray) -> Outputs:
    """Pick the most likely class per row and say why in words."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    best = probabilities.argmax(axis=1)
    labels = np.asarray(classes, dtype=object)[best]
    proba = probabilities[np.arange(len(best)), best]
    names = labels.astype(str)
    reason = np.array(
        [
            f"predicted {n} with probability {p:.2f}"
            for n, p in zip(names.tolist(), proba.tolist(), strict=True)
        ],
        dtype=object,
    )
    return Outputs(label=names, proba=proba, reason=reason)


def from_anomaly_scores(scores: np.ndarray, threshold: float) -> Outputs:
    """Scores above ``threshold`` are anomalies; the reason states score and threshold."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    anomaly = scores > threshold
    text = np.char.mod("anomaly score %.3f above threshold ", scores)
    reason = np.where(anomaly, np.char.add(text, f"{threshold:.3f}"), "").astype(object)
    return Outputs(score=scores, anomaly=anomaly, reason=reason)


def append_outputs(table: pa.Table, prefix: str, out: Outputs) -> pa.Table:
    """Add ``<prefix>_label/_proba/_score/_anomaly/_reason`` columns to ``table``."""
    columns = [
        ("label", out.label, pa.string()),
        ("proba", out.proba, pa.float64()),
        ("score", out.score, pa.float64()),
        ("anomaly", out.anomaly, pa.bool_()),
        ("reason", out.reason, pa.string()),
    ]
    for suffix, values, typ in columns:
        if values is not None:
            name = f"{prefix}_{suffix}"
            arr = pa.array(np.asarray(values).tolist() if typ == pa.string() else values, typ)
            index = table.schema.get_field_index(name)
            table = (
                table.set_column(index, name, arr) if index >= 0 else table.append_column(name, arr)
            )
    return table
