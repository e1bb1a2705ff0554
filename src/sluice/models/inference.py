"""Turn raw model outputs (labels, probabilities, scores) into Sluice's output columns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

FEW_ROWS = 64  # below this, per-row formatting beats building the table of texts


@dataclass
class Outputs:
    """What a model produced for a batch; unset fields add no column."""

    label: np.ndarray | None = None
    proba: np.ndarray | None = None
    score: np.ndarray | None = None
    anomaly: np.ndarray | None = None
    reason: np.ndarray | pa.Array | None = None


def from_probabilities(probabilities: np.ndarray, classes: list[str] | np.ndarray) -> Outputs:
    """Pick the most likely class per row and say why in words."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    best = probabilities.argmax(axis=1)
    names = [str(c) for c in classes]
    proba = np.take_along_axis(probabilities, best[:, None], axis=1)[:, 0]
    if len(best) <= FEW_ROWS:  # a prediction request: format the texts directly
        labels = np.asarray(names, dtype=object)[best].astype(str)
        texts = [
            f"predicted {n} with probability {p:.2f}"
            for n, p in zip(labels.tolist(), proba.tolist(), strict=True)
        ]
        return Outputs(label=labels, proba=proba, reason=np.array(texts, dtype=object))
    reason = _texts(
        best,
        proba,
        [f"predicted {name} with probability {k / 100:.2f}" for name in names for k in range(101)],
        lambda row: f"predicted {names[best[row]]} with probability {proba[row]:.2f}",
    )
    return Outputs(label=np.asarray(names)[best], proba=proba, reason=reason)


def _texts(best: np.ndarray, proba: np.ndarray, table: list[str], one: Any) -> pa.Array:
    """Reason per row from a table of texts by (class, probability in hundredths).

    Rows whose probability lies near a rounding tie or outside [0, 1] are formatted one by one
    (``one(row)``), so every text is exactly what ``%.2f`` gives.
    """
    hundredths = proba * 100.0
    with np.errstate(invalid="ignore"):
        k = np.rint(hundredths)
        odd = ~((k >= 0) & (k <= 100)) | (np.abs(hundredths - np.floor(hundredths) - 0.5) < 1e-6)
    index = best * 101 + np.where(odd, 0, k).astype(np.int64)
    extra = np.flatnonzero(odd)
    if extra.size:
        index[extra] = len(table) + np.arange(extra.size)
        table = table + [one(int(row)) for row in extra.tolist()]
    return pa.DictionaryArray.from_arrays(pa.array(index), pa.array(table, pa.string())).cast(
        pa.string()
    )


def from_anomaly_scores(scores: np.ndarray, threshold: float) -> Outputs:
    """Scores above ``threshold`` are anomalies; the reason states score and threshold."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    anomaly = scores > threshold
    rows = np.flatnonzero(anomaly)
    index = np.zeros(scores.shape[0], dtype=np.int64)
    index[rows] = np.arange(1, rows.size + 1)
    texts = [""] + [
        f"anomaly score {s:.3f} above threshold {threshold:.3f}" for s in scores[rows].tolist()
    ]
    reason = pa.DictionaryArray.from_arrays(pa.array(index), pa.array(texts, pa.string()))
    return Outputs(score=scores, anomaly=anomaly, reason=reason.cast(pa.string()))


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
            arr = _column(values, typ)
            index = table.schema.get_field_index(name)
            table = (
                table.set_column(index, name, arr) if index >= 0 else table.append_column(name, arr)
            )
    return table


def _column(values: Any, typ: pa.DataType) -> pa.Array:
    if isinstance(values, pa.Array):
        return values if values.type == typ else values.cast(typ)
    values = np.asarray(values)
    if typ == pa.string() and values.dtype.kind not in "UO":
        values = values.astype(str)
    return pa.array(values, typ)
