"""A tiny fabricated NAB corpus: a few series with known anomaly windows, laid out like NAB."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SPIKE = 30.0


def _stamp(t: np.datetime64) -> str:
    return str(t).replace("T", " ")


def write_tiny_nab(
    root: Path, rows: int = 1500, spikes: dict[str, int] | None = None, seed: int = 0
) -> dict[str, tuple[int, int]]:
    """Write series ``demo/<name>.csv`` (noise, one spike each) and their windows under ``root``.

    Returns each file's window as inclusive row indices (10 rows either side of its spike).
    """
    spikes = spikes or {"demo/a.csv": 900, "demo/b.csv": 1100, "other/c.csv": 1300}
    (root / "labels").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    labels, windows = {}, {}
    for i, (name, at) in enumerate(sorted(spikes.items())):
        start = np.datetime64("2020-01-01T00:00:00") + np.timedelta64(7 * i, "m")
        ts = start + np.arange(rows) * np.timedelta64(5, "m")
        values = 10.0 * (i + 1) + rng.normal(size=rows)
        values[at] += SPIKE
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = ["timestamp,value"] + [
            f"{_stamp(t)},{v:.6f}" for t, v in zip(ts, values, strict=True)
        ]
        path.write_text("\n".join(lines) + "\n")
        windows[name] = (at - 10, at + 10)
        labels[name] = [[f"{_stamp(ts[at - 10])}.000000", f"{_stamp(ts[at + 10])}.000000"]]
    (root / "labels" / "combined_windows.json").write_text(json.dumps(labels))
    return windows
