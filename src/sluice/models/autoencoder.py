"""A small PyTorch autoencoder whose TorchScript output is the reconstruction error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sluice.core.deps import require


def fit_autoencoder(
    X: np.ndarray, folder: Path, *, seed: int = 0, epochs: int = 20, contamination: float = 0.01
) -> tuple[Path, dict[str, Any]]:
    """Train on standardised ``X``; save a scripted module mapping rows to their error."""
    torch = require("torch", "torch", "autoencoder training")
    torch.manual_seed(seed)
    mean = X.mean(axis=0)
    std = X.std(axis=0) + 1e-9
    n_features = X.shape[1]
    hidden = max(2, n_features // 2)

    class Scorer(torch.nn.Module):  # type: ignore[name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32))
            self.net = torch.nn.Sequential(
                torch.nn.Linear(n_features, 16),
                torch.nn.ReLU(),
                torch.nn.Linear(16, hidden),
                torch.nn.ReLU(),
                torch.nn.Linear(hidden, 16),
                torch.nn.ReLU(),
                torch.nn.Linear(16, n_features),
            )

        def forward(self, x: Any) -> Any:
            z = (x - self.mean) / self.std
            return ((self.net(z) - z) ** 2).mean(dim=1)

    model = Scorer()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    data = torch.tensor(X, dtype=torch.float32)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for batch in torch.randperm(len(data), generator=generator).split(1024):
            optimiser.zero_grad()
            loss = model(data[batch]).mean()
            loss.backward()
            optimiser.step()
    model.eval()
    with torch.no_grad():
        errors = model(data).numpy()
    path = folder / "model.pt2"
    batch = torch.export.Dim("batch")
    program = torch.export.export(model, (data[:8],), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))
    return path, {
        "threshold": float(np.quantile(errors, 1 - contamination)),
        "n_features": n_features,
    }
