"""Scoring plain records (dicts) with numpy, without building an Arrow table per request.

This is the predict fast path for file models (scikit-learn, ONNX, ...) and
``online_anomaly``; the answers equal what scoring a table of the same records gives.
Other models return ``None`` here and are scored through a table.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from sluice.core.errors import ModelError
from sluice.models.base import Model
from sluice.models.formats import FileModel
from sluice.models.inference import Outputs
from sluice.models.online import OnlineAnomalyModel

_FIELDS = ("label", "proba", "score", "anomaly", "reason")


def feature_rows(records: list[dict[str, Any]], features: list[str]) -> np.ndarray:
    """``features`` of ``records`` as a float64 matrix (absent or null values become NaN)."""
    missing = [f for f in features if not any(f in r for r in records)]
    if missing:
        raise ModelError(f"missing feature column(s): {', '.join(missing)}")
    rows = [[_number(r.get(f), f) for f in features] for r in records]
    return np.array(rows, dtype=np.float64).reshape(len(records), len(features))


def _number(value: Any, name: str) -> float:
    if value is None:
        return np.nan
    if isinstance(value, int | float):  # bool is an int
        return float(value)
    raise ModelError(f"feature {name!r} is {type(value).__name__}, not numeric")


def key_values(records: list[dict[str, Any]], key: str) -> np.ndarray:
    """The ``key`` of each record as the detector reads a table's key column."""
    if not any(key in r for r in records):
        raise ModelError(f"missing key column {key!r}")
    values = [r.get(key) for r in records]
    if all(type(v) is str for v in values):  # what Arrow makes of strings, without it
        return np.array(values, dtype=object)
    try:
        column = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ModelError(f"records do not form a table: {exc}") from None
    return column.to_numpy(zero_copy_only=False)


def score_records(model: Model, records: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """Predictions for ``records`` without learning; ``None`` when ``model`` has no fast path."""
    if isinstance(model, OnlineAnomalyModel):
        features = model.config.features
        keys = key_values(records, model.config.key) if model.config.key else None
        found = model.detector.score(keys, feature_rows(records, features))
        return predictions(Outputs(score=found.score, anomaly=found.anomaly, reason=found.reason))
    if isinstance(model, FileModel):
        return predictions(model.infer(feature_rows(records, model.features())))
    return None


def predictions(out: Outputs) -> list[dict[str, Any]]:
    """One ``{"label", "proba", "score", "anomaly", "reason"}`` dict per row (set fields only)."""
    columns = {
        name: _plain(values) for name in _FIELDS if (values := getattr(out, name)) is not None
    }
    n = len(next(iter(columns.values()))) if columns else 0
    return [{name: values[i] for name, values in columns.items()} for i in range(n)]


def _plain(values: np.ndarray) -> list[Any]:
    array = np.asarray(values)
    if array.dtype.kind in "OUS":
        return [None if v is None else str(v) for v in array.tolist()]
    return list(array.tolist())
