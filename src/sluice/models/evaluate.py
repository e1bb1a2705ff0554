"""``sluice models evaluate``: NAB, the generator's labelled anomalies, or a registered model."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from sluice.core.errors import ConfigError
from sluice.core.settings import Settings
from sluice.models.metrics import binary_metrics

GENERATOR_FEATURES = ["temperature", "pressure", "vibration"]


def online_detector(features: list[str], key: str | None = None) -> Any:
    """A default-configured ``online_anomaly`` detector."""
    from sluice.models.online_anomaly import OnlineAnomalyConfig, OnlineAnomalyDetector

    return OnlineAnomalyDetector(OnlineAnomalyConfig(features=features, key=key))


def evaluate_on_nab(root: str | None = None) -> Any:
    """NAB scores (three profiles, per category) of ``online_anomaly`` with defaults, causal."""
    from pathlib import Path

    from sluice.models.nab import evaluate_nab

    return evaluate_nab(
        lambda: online_detector(["value"]), root=Path(root) if root else None, name="online_anomaly"
    )


def evaluate_on_generator(
    events: int = 200_000, devices: int = 50, seed: int = 7, batch_rows: int = 20_000
) -> dict[str, Any]:
    """Precision/recall/F1/AUC on the generator's injected anomalies (label-free threshold)."""
    from sluice.sources import synthetic

    table = synthetic.telemetry(events, n_devices=devices, seed=seed)
    detector = online_detector(GENERATOR_FEATURES, key="device_id")
    keys = table.column("device_id").to_numpy(zero_copy_only=False)
    X = np.column_stack(
        [
            table.column(f).to_numpy(zero_copy_only=False).astype(np.float64)
            for f in GENERATOR_FEATURES
        ]
    )
    flags, scores = [], []
    for start in range(0, table.num_rows, batch_rows):
        result = detector.score_learn(
            keys[start : start + batch_rows], X[start : start + batch_rows]
        )
        flags.append(result.anomaly)
        scores.append(result.score)
    truth = np.asarray(table.column("is_anomaly").to_numpy(zero_copy_only=False), dtype=bool)
    kinds = np.asarray(table.column("anomaly_kind").to_pylist(), dtype=object)
    flagged = np.concatenate(flags)
    return {
        "events": table.num_rows,
        **binary_metrics(truth, flagged, np.concatenate(scores)),
        **kind_breakdown(truth, flagged, kinds),
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


def evaluate_registered(settings: Settings, name: str, table: str, label: str) -> dict[str, Any]:
    """Score a lake/warehouse table with a registered model and compare with ``label``."""
    from sluice.config.models import ModelConfig
    from sluice.models.base import ModelContext, create_model
    from sluice.models.registry import ModelRegistry
    from sluice.storage.query import QueryEngine

    version = ModelRegistry(settings).get(name)
    if not label.replace("_", "").isalnum() or not table.replace("_", "").isalnum():
        raise ConfigError("table and label must be plain names")
    data: pa.Table = QueryEngine(settings).query(f'SELECT * FROM "{table}"')
    model = create_model(
        ModelConfig(name=name, type=version.format, features=version.features),
        ModelContext("evaluate", settings),
    )
    scored = model.score(data)
    truth = np.asarray(scored.column(label).to_pylist())
    if f"{name}_anomaly" in scored.column_names:
        flags = np.asarray(scored.column(f"{name}_anomaly").to_pylist(), dtype=bool)
        scores = np.asarray(scored.column(f"{name}_score").to_pylist(), dtype=np.float64)
        return {"version": version.version, **binary_metrics(truth.astype(bool), flags, scores)}
    predicted = np.asarray(scored.column(f"{name}_label").to_pylist())
    return {
        "version": version.version,
        "rows": len(truth),
        "accuracy": float(np.mean(predicted.astype(str) == truth.astype(str))),
    }
