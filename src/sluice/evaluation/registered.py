"""Evaluate a registered model on a labelled lake or warehouse table."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from sluice.core.errors import ConfigError
from sluice.core.settings import Settings
from sluice.models.metrics import binary_metrics


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
