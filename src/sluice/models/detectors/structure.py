"""Multivariate structure: breaks of the learned pairwise correlation between features.

For every pair of features an exponentially weighted correlation of their standardised
deviations is learned per key. When two features are usually correlated (``|rho| >= 0.6``),
the residual of one predicted from the other, ``(e_i - rho e_j) / sqrt(1 - rho^2)``, is a
standard-normal statistic that flags events whose features disagree even if each one alone
looks ordinary.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from sluice.models.detectors.scan import Segments, ew_scans

MIN_CORRELATION = 0.6


@cache
def pair_index(p: int) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays of the unordered feature pairs (i < j); shared, read-only."""
    i, j = np.triu_indices(p, k=1)
    i.flags.writeable = j.flags.writeable = False
    return i, j


PAIR_STATE = ("pw", "pc", "rw", "rv1", "rv2")
CLIP = 4.0


def structure_scores(
    e: np.ndarray, ready: np.ndarray, segs: Segments, decay: float, init: dict[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Per-feature structure statistic (p, n), its partner feature, and final pair state."""
    p, n = e.shape
    i, j = pair_index(p)
    both = (ready[i] & ready[j]).astype(np.float64)
    (w, c), (final_w, final_c) = ew_scans(
        [([both, both * e[i] * e[j]], decay, [init["pw"], init["pc"]])], segs
    )
    rho = np.where(w > 30.0, c / (w + 20.0), 0.0)  # shrunk toward 0 while evidence is thin
    rho = np.minimum(np.maximum(rho, -0.99), 0.99)
    usable = (np.abs(rho) >= MIN_CORRELATION) & (both > 0)
    # residual scale learned per key (the deviations are only roughly unit-variance)
    r_ij = np.where(usable, e[i] - rho * e[j], 0.0)
    r_ji = np.where(usable, e[j] - rho * e[i], 0.0)
    lim = np.sqrt(np.maximum(1.0 - rho * rho, 1e-4)) * 2 * CLIP
    rows = [
        usable.astype(np.float64),
        np.minimum(r_ij * r_ij, lim * lim),
        np.minimum(r_ji * r_ji, lim * lim),
    ]
    (rw, v_ij, v_ji), fin2 = ew_scans(
        [(rows, decay, [init["rw"], init["rv1"], init["rv2"]])], segs
    )
    ok = usable & (rw > 30.0)
    prior = (1.0 - rho * rho) * 20.0
    r_ij = np.where(ok, r_ij / np.sqrt((v_ij + prior) / (rw + 20.0)), 0.0)
    r_ji = np.where(ok, r_ji / np.sqrt((v_ji + prior) / (rw + 20.0)), 0.0)
    z, partner = _strongest_partner(p, n, r_ij, r_ji)
    state = {"pw": final_w, "pc": final_c, "rw": fin2[0], "rv1": fin2[1], "rv2": fin2[2]}
    return z, partner, state


def _strongest_partner(
    p: int, n: int, r_ij: np.ndarray, r_ji: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per feature, the residual of largest size over its partners (the first one on ties;
    partner 0 and residual 0 when all are 0)."""
    i, j = pair_index(p)
    r = np.zeros((p, p, n))  # r[a, b]: residual of feature a predicted from feature b
    r[i, j] = r_ij
    r[j, i] = r_ji
    partner = np.argmax(np.abs(r), axis=1)
    return r[np.arange(p)[:, None], partner, np.arange(n)], partner
