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

from sluice.models.detectors.scan import Segments, ew_scan_stacked

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
    return _residual_scales(1.0 - rho * rho, rw, v)[0]


def _residual_scales(free: np.ndarray, rw: np.ndarray, *v: np.ndarray) -> list[np.ndarray]:
    """:func:`_residual_scale` of each of ``v``, given ``free = 1 - rho ** 2``."""
    prior = free * 20.0
    weight = rw + 20.0
    return [np.sqrt((x + prior) / weight) for x in v]


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
    ei, ej = e[i], e[j]
    both = ready[i] & ready[j]
    k = i.shape[0]
    state: dict[str, np.ndarray] = {}
    if basis is None:
        rows = np.empty((2, k, n))
        np.copyto(rows[0], both)
        np.multiply(rows[0], ei, out=rows[1])
        rows[1] *= ej
        (w, c), final = ew_scan_stacked(rows, decay, segs, np.array([init["pw"], init["pc"]]))
        state.update(zip(("pw", "pc"), final, strict=True))
        rho = _correlation(w, c)
    else:
        rho = basis["rho"]
    usable = (np.abs(rho) >= MIN_CORRELATION) & both
    # only pairs correlated somewhere (or that were) have residuals: the others' stay 0
    live = usable.any(axis=1)
    if basis is None:
        state.update({name: np.zeros_like(init[name]) for name in ("rw", "rv1", "rv2")})
        for name in ("rw", "rv1", "rv2"):
            live |= (init[name] != 0.0).any(axis=1)
    at = np.flatnonzero(live)
    if at.size == 0:
        return np.zeros((p, n)), np.zeros((p, n), dtype=np.int64), state
    usable, rho, ei, ej = usable[at], rho[at], ei[at], ej[at]
    r_ij = np.where(usable, ei - rho * ej, 0.0)
    r_ji = np.where(usable, ej - rho * ei, 0.0)
    if basis is None:
        free = 1.0 - rho * rho
        lim = np.sqrt(np.maximum(free, 1e-4)) * 2 * CLIP
        lim *= lim
        rows = np.empty((3, at.size, n))
        np.copyto(rows[0], usable)
        np.minimum(np.square(r_ij, out=rows[1]), lim, out=rows[1])
        np.minimum(np.square(r_ji, out=rows[2]), lim, out=rows[2])
        names = ("rw", "rv1", "rv2")
        (rw, v_ij, v_ji), final = ew_scan_stacked(
            rows, decay, segs, np.array([init[k][at] for k in names])
        )
        for name, values in zip(names, final, strict=True):
            state[name][at] = values
        s_ij, s_ji = _residual_scales(free, rw, v_ij, v_ji)
    else:
        rw, s_ij, s_ji = basis["rw"][at], basis["s_ij"][at], basis["s_ji"][at]
    ok = usable & (rw > 30.0)
    r_ij = np.where(ok, r_ij / s_ij, 0.0)
    r_ji = np.where(ok, r_ji / s_ji, 0.0)
    z, partner = _strongest_partner(p, n, at, r_ij, r_ji)
    return z, partner, state


def _strongest_partner(
    p: int, n: int, pairs: np.ndarray, r_ij: np.ndarray, r_ji: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per feature, the residual of largest size over its partners (the first one on ties;
    partner 0 and residual 0 when all are 0); ``pairs`` are those with residuals."""
    i, j = pair_index(p)
    i, j = i[pairs], j[pairs]
    r = np.zeros((p, p, n))  # r[b, a]: residual of feature a predicted from feature b
    r[j, i] = r_ij
    r[i, j] = r_ji
    z = r[0].copy()
    size = np.abs(z)
    partner = np.zeros((p, n), dtype=np.int64)
    for b in range(1, p):
        s = np.abs(r[b])
        better = s > size
        np.copyto(z, r[b], where=better)
        np.copyto(partner, b, where=better)
        np.maximum(size, s, out=size)
    return z, partner
