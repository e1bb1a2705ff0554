"""Batch training on lake/warehouse data: isolation forest, autoencoder, text classifier.

Each run reads the training range with the query engine, fits, evaluates on labels when the
table has them, and registers the result as a ``candidate`` version in the registry.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from sluice.core.deps import require
from sluice.core.errors import ConfigError, ModelError
from sluice.core.settings import Settings
from sluice.models.registry import ModelRegistry, ModelVersion

TRAINABLE = ("isolation_forest", "autoencoder", "text_classifier")


@dataclass
class TrainSpec:
    """What to train on: table, features, optional label and time range."""

    name: str
    kind: str
    table: str
    features: list[str] = field(default_factory=list)
    label: str | None = None
    time_column: str | None = None
    since: str | None = None
    until: str | None = None
    seed: int = 0
    params: dict[str, Any] = field(default_factory=dict)


def _quote(name: str) -> str:
    if not name.replace("_", "").isalnum():
        raise ConfigError(f"invalid column or table name {name!r}")
    return f'"{name}"'


def load_training_data(settings: Settings, spec: TrainSpec) -> pa.Table:
    """Read the training columns (and label) for the requested time range."""
    from sluice.storage.query import QueryEngine

    columns = [*spec.features, *([spec.label] if spec.label else [])]
    where = []
    if spec.time_column and spec.since:
        where.append(f"{_quote(spec.time_column)} >= TIMESTAMPTZ '{_literal(spec.since)}'")
    if spec.time_column and spec.until:
        where.append(f"{_quote(spec.time_column)} < TIMESTAMPTZ '{_literal(spec.until)}'")
    sql = f"SELECT {', '.join(map(_quote, columns))} FROM {_quote(spec.table)}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    table: pa.Table = QueryEngine(settings).query(sql)
    if table.num_rows == 0:
        raise ModelError(f"no training rows in {spec.table!r} for the requested range")
    return table


def _literal(text: str) -> str:
    if "'" in text:
        raise ConfigError(f"invalid time {text!r}")
    return text


def train(settings: Settings, spec: TrainSpec) -> ModelVersion:
    """Train ``spec.kind`` on its table and register a candidate version."""
    if spec.kind not in TRAINABLE:
        raise ConfigError(f"cannot train {spec.kind!r}; trainable types: {', '.join(TRAINABLE)}")
    data = load_training_data(settings, spec)
    with tempfile.TemporaryDirectory() as tmp:
        if spec.kind == "text_classifier":
            artifact, metrics, params = _fit_text(data, spec, Path(tmp))
        else:
            X = _matrix(data, spec.features)
            fit = _fit_isolation_forest if spec.kind == "isolation_forest" else _fit_autoencoder
            artifact, params = fit(X, spec, Path(tmp))
            metrics = _label_metrics(settings, spec, artifact, params, data, X)
        return ModelRegistry(settings).register(
            spec.name,
            spec.kind,
            artifact,
            features=spec.features,
            metrics=metrics,
            params=params,
            data_range={
                "table": spec.table,
                "since": spec.since,
                "until": spec.until,
                "rows": data.num_rows,
            },
        )


def _matrix(table: pa.Table, features: list[str]) -> np.ndarray:
    from sluice.models.online import feature_matrix

    X = feature_matrix(table, features)
    return X[np.isfinite(X).all(axis=1)]


def _fit_isolation_forest(
    X: np.ndarray, spec: TrainSpec, folder: Path
) -> tuple[Path, dict[str, Any]]:
    require("sklearn", "ml", "isolation_forest training")
    import joblib
    from sklearn.ensemble import IsolationForest
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(
        StandardScaler(),
        IsolationForest(
            n_estimators=int(spec.params.get("n_estimators", 200)), random_state=spec.seed
        ),
    )
    model.fit(X)
    scores = -model.score_samples(X)
    threshold = float(np.quantile(scores, 1 - float(spec.params.get("contamination", 0.01))))
    path = folder / "model.joblib"
    joblib.dump(model, path)
    return path, {"threshold": threshold, "n_features": X.shape[1]}


def _fit_autoencoder(X: np.ndarray, spec: TrainSpec, folder: Path) -> tuple[Path, dict[str, Any]]:
    from sluice.models.autoencoder import fit_autoencoder

    return fit_autoencoder(
        X,
        folder,
        seed=spec.seed,
        epochs=int(spec.params.get("epochs", 20)),
        contamination=float(spec.params.get("contamination", 0.01)),
    )


def _fit_text(
    data: pa.Table, spec: TrainSpec, folder: Path
) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    import joblib

    from sluice.models.text import train_text_classifier

    if not spec.features or not spec.label:
        raise ConfigError("a text classifier needs a text column (features) and a label")
    texts = data.column(spec.features[0]).to_pylist()
    labels = [str(x) for x in data.column(spec.label).to_pylist()]
    model, metrics = train_text_classifier(texts, labels, seed=spec.seed)
    path = folder / "model.joblib"
    joblib.dump(model, path)
    return path, metrics, {"classes": [str(c) for c in model.classes_], "text": spec.features[0]}


def _label_metrics(
    settings: Settings,
    spec: TrainSpec,
    artifact: Path,
    params: dict[str, Any],
    data: pa.Table,
    X: np.ndarray,
) -> dict[str, Any]:
    """Precision/recall/F1/AUC on the training range when the table has a label column."""
    if not spec.label:
        return {"rows": int(X.shape[0])}
    from sluice.models.metrics import binary_metrics
    from sluice.models.scoring import anomaly_scores

    full = _matrix_with_mask(data, spec.features)
    y = np.asarray(data.column(spec.label).to_pylist(), dtype=bool)[full[1]]
    scores = anomaly_scores(spec.kind, artifact, full[0])
    return {**binary_metrics(y, scores > params["threshold"], scores), "rows": int(X.shape[0])}


def _matrix_with_mask(table: pa.Table, features: list[str]) -> tuple[np.ndarray, np.ndarray]:
    from sluice.models.online import feature_matrix

    X = feature_matrix(table, features)
    mask = np.isfinite(X).all(axis=1)
    return X[mask], mask
