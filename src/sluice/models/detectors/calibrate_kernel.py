"""The compiled loop of :func:`sluice.models.detectors.calibrate.calibrate` (numba).

Plain Python over each key's events in order; see :mod:`sluice.models.detectors.calibrate`
for what it computes. Imported only when a detector first calibrates.
"""

from __future__ import annotations

import math

import numba
import numpy as np

_jit = numba.njit(cache=True, nogil=True)


@_jit
def _refit(hist, tails, model, edges, widths, mids, q_tail, lam_min, atom):
    """Tail sums and the tail model (threshold, share above it, decay, total) per statistic."""
    n_stats, n_bins = hist.shape
    for c in range(n_stats):
        acc = 0.0
        for b in range(n_bins - 1, -1, -1):
            acc += hist[c, b]
            tails[c, b] = acc
        total = max(acc, 1e-300)
        target = q_tail * acc
        b = 0
        while b + 1 < n_bins and tails[c, b + 1] >= target:
            b += 1
        h = hist[c, b]
        inside = (tails[c, b] - target) / h if h > 0 else 0.0
        high = edges[b] + widths[b] * min(max(inside, 0.0), 1.0)
        high = max(high, atom)
        b = _bin(high, edges)
        upper = tails[c, b + 1] if b + 1 < n_bins else 0.0
        top = edges[b] + widths[b]
        partial = hist[c, b] * min(max((top - high) / widths[b], 0.0), 1.0)
        weighted = 0.0
        for k in range(b + 1, n_bins):
            weighted += hist[c, k] * mids[k]
        mass = upper + partial
        if mass > 0:
            mean = (weighted - high * upper + partial * (top - high) / 2.0) / mass
        else:
            mean = 1.0 / math.log(10.0)
        lam = 1.0 / (max(mean, 1e-9) * math.log(10.0))
        model[c, 0] = high
        model[c, 1] = min(mass / total, q_tail)
        model[c, 2] = min(max(lam, lam_min), 1.0)
        model[c, 3] = total


@_jit
def _bin(s, edges):
    """Index of the bin holding ``s`` (the first for anything below 0, the last is open)."""
    lo, hi = 0, edges.shape[0] - 1
    if s >= edges[hi]:
        return hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if edges[mid] <= s:
            lo = mid
        else:
            hi = mid
    return lo


@_jit
def _probability(s, c, hist, tails, model, edges, widths, floor):
    """Calibrated tail probability of statistic ``c`` at ``s``."""
    n_bins = edges.shape[0]
    b = _bin(s, edges)
    above = tails[c, b + 1] if b + 1 < n_bins else 0.0
    inside = min(max((edges[b] + widths[b] - s) / widths[b], 0.0), 1.0)
    p = (above + hist[c, b] * inside) / model[c, 3]
    high = model[c, 0]
    if s > high:
        fitted = model[c, 1] * 10.0 ** (-model[c, 2] * (s - high))
        p = max(p, max(fitted, 10.0 ** (-s)))
    return min(max(p, floor), 1.0)


@_jit
def _combine(evidence, i, extra, floor):
    """Cauchy combination of the components' p-values and ``extra``: ``-log10 p``."""
    n_comp = evidence.shape[1]
    total = 0.0
    for c in range(n_comp + 1):
        p = evidence[i, c] if c < n_comp else extra
        p = min(max(p, floor), 0.5)
        total += 1.0 / math.tan(math.pi * p)
    mean = total / (n_comp + 1)
    combined = math.atan2(1.0, mean) / math.pi
    return -math.log10(max(combined, floor))


@_jit
def _run(
    stats,
    extra,
    learn,
    trusted,
    bounds,
    count,
    state,
    ints,
    reals,
    edges,
    widths,
    mids,
    evidence,
    out,
):
    """Walk every key's events in order (see the calibrate module)."""
    block = ints[0]
    decay, q_tail, lam_min, exclude, atom, floor = reals
    n_comp = stats.shape[1]
    n_stats, n_bins = n_comp + 1, edges.shape[0]
    tails = np.empty((n_stats, n_bins))
    model = np.empty((n_stats, 4))
    for g in range(count.shape[0]):
        hist = state[g, 0]
        pend = state[g, 1]
        current = (count[g] - 1) // block
        _refit(hist, tails, model, edges, widths, mids, q_tail, lam_min, atom)
        for j in range(bounds[g], bounds[g + 1]):
            i = j
            k = count[g] + (j - bounds[g])
            if k // block != current:
                current = k // block
                for c in range(n_stats):
                    for b in range(n_bins):
                        hist[c, b] = hist[c, b] * decay + pend[c, b]
                        pend[c, b] = 0.0
                _refit(hist, tails, model, edges, widths, mids, q_tail, lam_min, atom)
            for c in range(n_comp):
                evidence[i, c] = _probability(
                    stats[i, c], c, hist, tails, model, edges, widths, floor
                )
            s = _combine(evidence, i, extra[i], floor)
            out[i] = _probability(s, n_comp, hist, tails, model, edges, widths, floor)
            if learn[i]:
                for c in range(n_comp):
                    if not trusted[i] or evidence[i, c] > exclude:
                        pend[c, _bin(stats[i, c], edges)] += 1.0
                if not trusted[i] or out[i] > exclude:
                    pend[n_comp, _bin(s, edges)] += 1.0


def compiled() -> numba.core.registry.CPUDispatcher:
    """The kernel (compiled on its first call; cached on disk where the package is writable)."""
    return _run
