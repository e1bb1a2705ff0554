"""Score a feature matrix with a trained anomaly artifact (used for evaluation)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def anomaly_scores(kind: str, artifact: Path, X: np.ndarray) -> np.ndarray:
    """Higher = more anomalous, for ``isolation_forest`` and ``autoencoder`` artifacts."""
    if kind == "isolation_forest":
        import joblib

        return np.asarray(-joblib.load(artifact).score_samples(X), dtype=np.float64)
    import torch

    module = torch.export.load(str(artifact)).module()
    with torch.no_grad():
        return module(torch.from_numpy(X.astype(np.float32))).numpy().astype(np.float64)
