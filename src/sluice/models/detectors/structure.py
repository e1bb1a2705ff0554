"""Multivariate structure: breaks of the learned pairwise correlation between features.

For every pair of features an exponentially weighted correlation of their standardised
deviations is learned per key. When two features are usually correlated (``|rho| >= 0.6``),
the residual of one predicted from the other, ``(e_i - rho e_j) / sqrt(1 - rho^2)``, is a
standard-normal statistic that flags events whose features disagree even if each one alone
looks ordinary.
"""

from __future__ import annotations

import numpy as np

from sluice.models.detectors.scan import Segments, ew_scan

MIN_CORRELATION = 0.6


def pair_index(p: int) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays of the unordered feature pairs (i < j)."""
    i, j = np.triu_indices(p, k=1)
    return i, j


def structure_scores(e: np.ndarray, ready: np.ndarray, segs: Segments, decay: float,
                     init_w: np.ndarray, init_c: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-feature structure statistic (p, n), its partner feature, and final pair sums."""
    p, n = e.shape
    i, j = pair_index(p)
    both = (ready[i] & ready[j]).astype(np.float64)
    rows = np.concatenate([both, both * e[i] * e[j]])
    before, final = ew_scan(rows, decay, segs, np.concatenate([init_w, init_c]))
    w, c = before[: len(i)], before[len(i):]
    rho = np.where(w > 30.0, c / (w + 20.0), 0.0)  # shrunk toward 0 while evidence is thin
    rho = np.clip(rho, -0.99, 0.99)
    usable = (np.abs(rho) >= MIN_CORRELATION) & (both > 0)
    scale = np.sqrt(1.0 - rho * rho)
    r_ij = np.where(usable, (e[i] - rho * e[j]) / scale, 0.0)
    r_ji = np.where(usable, (e[j] - rho * e[i]) / scale, 0.0)
    z = np.zeros((p, n))
    partner = np.zeros((p, n), dtype=np.int64)
    for k in range(len(i)):
        for a, b, r in ((i[k], j[k], r_ij[k]), (j[k], i[k], r_ji[k])):
            better = np.abs(r) > np.abs(z[a])
            z[a] = np.where(better, r, z[a])
            partner[a] = np.where(better, b, partner[a])
    return z, partner, final[: len(i)], final[len(i):]
