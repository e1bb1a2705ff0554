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


def _correlation(w: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Correlation of a pair from its EW sums, shrunk toward 0 while evidence is thin."""
    rho = np.where(w > 30.0, c / (w + 20.0), 0.0)
    return np.minimum(np.maximum(rho, -0.99), 0.99)


def _residual_scale(rho: np.ndarray, rw: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Scale of a pair's residual learned per key (the deviations are only roughly
    unit-variance), with a prior of 20 events at the residual's theoretical variance."""
    prior = (1.0 - rho * rho) * 20.0
    return np.sqrt((v + prior) / (rw + 20.0))


def pair_basis(st: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What the structure statistic takes from each key's stored pair state (the state
    before its next event)."""
    rho = _correlation(st["pw"], st["pc"])
    return {
        "rho": rho,
        "rw": st["rw"],
        "s_ij": _residual_scale(rho, st["rw"], st["rv1"]),
        "s_ji": _residual_scale(rho, st["rw"], st["rv2"]),
    }


def structure_scores(
    e: np.ndarray,
    ready: np.ndarray,
    segs: Segments,
    decay: float,
    init: dict[str, np.ndarray],
    basis: dict[str, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Per-feature structure statistic (p, n), its partner feature, and final pair state.

    ``basis`` (see :func:`pair_basis`) is given for one event per key scored without
    learning: nothing is scanned then, and no final state is returned.
    """
    p, n = e.shape
    i, j = pair_index(p)
    both = (ready[i] & ready[j]).astype(np.float64)
    state: dict[str, np.ndarray] = {}
    if basis is None:
        (w, c), (state["pw"], state["pc"]) = ew_scans(
            [([both, both * e[i] * e[j]], decay, [init["pw"], init["pc"]])], segs
        )
        rho = _correlation(w, c)
    else:
        rho = basis["rho"]
    usable = (np.abs(rho) >= MIN_CORRELATION) & (both > 0)
    r_ij = np.where(usable, e[i] - rho * e[j], 0.0)
    r_ji = np.where(usable, e[j] - rho * e[i], 0.0)
    if basis is None:
        lim = np.sqrt(np.maximum(1.0 - rho * rho, 1e-4)) * 2 * CLIP
        rows = [
            usable.astype(np.float64),
            np.minimum(r_ij * r_ij, lim * lim),
            np.minimum(r_ji * r_ji, lim * lim),
        ]
        (rw, v_ij, v_ji), (state["rw"], state["rv1"], state["rv2"]) = ew_scans(
            [(rows, decay, [init["rw"], init["rv1"], init["rv2"]])], segs
        )
        s_ij, s_ji = _residual_scale(rho, rw, v_ij), _residual_scale(rho, rw, v_ji)
    else:
        rw, s_ij, s_ji = basis["rw"], basis["s_ij"], basis["s_ji"]
    ok = usable & (rw > 30.0)
    r_ij = np.where(ok, r_ij / s_ij, 0.0)
    r_ji = np.where(ok, r_ji / s_ji, 0.0)
    z, partner = _strongest_partner(p, n, r_ij, r_ji)
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
