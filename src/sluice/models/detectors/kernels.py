"""The compiled loops of ``online_anomaly`` (numba): component statistics and calibration.

Plain Python over events; see :mod:`sluice.models.detectors.evidence` and
:mod:`sluice.models.detectors.calibrate` for what they compute. Imported (and compiled, or
loaded from numba's on-disk cache) only when a detector first scores.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any


def _cache_location() -> bool:
    """Whether numba can cache compiled kernels on disk: beside this file when it is writable,
    else ``NUMBA_CACHE_DIR`` (set here to a private temporary folder when the package is
    installed read-only, as in the Docker image; numba would refuse to cache at all)."""
    if os.environ.get("NUMBA_CACHE_DIR") or os.access(Path(__file__).parent, os.W_OK):
        return True
    fallback = Path(tempfile.gettempdir()) / f"sluice-numba-{os.getuid()}"
    try:
        fallback.mkdir(mode=0o700, exist_ok=True)
    except OSError:
        return False
    os.environ["NUMBA_CACHE_DIR"] = str(fallback)
    return True


_CACHE = _cache_location()  # before numba reads its configuration

import numba  # noqa: E402 - after the cache location is settled
import numpy as np  # noqa: E402

_jit = numba.njit(cache=_CACHE, nogil=True)


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
    if s < edges[1]:  # most often: exactly 0, nothing to say
        return 0
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
def _probability(s, b, c, hist, tails, model, edges, widths, floor, open_top=False):
    """Calibrated tail probability of statistic ``c`` at ``s`` (in bin ``b``); ``open_top``:
    the open last bin's events count as at least as extreme as any ``s`` in it (the
    published probability of a key whose extremes recur)."""
    n_bins = edges.shape[0]
    above = tails[c, b + 1] if b + 1 < n_bins else 0.0
    if open_top and b == n_bins - 1:
        inside = 1.0
    else:
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
        if p < 0.5:  # p >= 1/2 adds tan(0) = 0: no evidence
            total += 1.0 / math.tan(math.pi * max(p, floor))
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
    episodes,
    block,
    reals,
    edges,
    widths,
    mids,
    evidence,
    out,
):
    """Walk every key's events in order (see the calibrate module)."""
    decay, q_tail, lam_min, exclude, atom, floor, event_decay, gap, z_limit = reals
    n_comp = stats.shape[1]
    n_stats, n_bins = n_comp + 1, edges.shape[0]
    tails = np.empty((n_stats, n_bins))
    model = np.empty((n_stats, 4))
    bins = np.empty(n_stats, dtype=np.int64)
    recurs = np.empty(n_stats, dtype=np.bool_)
    for g in range(count.shape[0]):
        hist = state[g, 0]
        pend = state[g, 1]
        current = (count[g] - 1) // block
        _refit(hist, tails, model, edges, widths, mids, q_tail, lam_min, atom)
        seen = episodes[g, 0]  # EW count of trusted events (then per statistic: its episodes)
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
            # excluded episodes (after ``gap`` events without one) are counted; where they
            # recur far more often than calibration allows, extremes are the key's normal
            expected = exclude * seen
            limit = expected + z_limit * math.sqrt(expected) + 1.0
            for c in range(n_stats):
                recurs[c] = episodes[g, 1 + 2 * c] > limit
            for c in range(n_comp):
                bins[c] = _bin(stats[i, c], edges)
                evidence[i, c] = _probability(
                    stats[i, c], bins[c], c, hist, tails, model, edges, widths, floor
                )
            s = _combine(evidence, i, extra[i], floor)
            c = n_comp
            bins[c] = _bin(s, edges)
            out[i] = _probability(
                s, bins[c], c, hist, tails, model, edges, widths, floor, recurs[c]
            )
            if learn[i]:
                seen = seen * event_decay + (1.0 if trusted[i] else 0.0)
                for c in range(n_stats):
                    p = evidence[i, c] if c < n_comp else out[i]
                    if not trusted[i] or p > exclude or recurs[c]:
                        pend[c, bins[c]] += 1.0
                    episodes[g, 1 + 2 * c] *= event_decay
                    if trusted[i] and p <= exclude:
                        if episodes[g, 2 + 2 * c] >= gap:
                            episodes[g, 1 + 2 * c] += 1.0
                        episodes[g, 2 + 2 * c] = 0.0
                    else:
                        episodes[g, 2 + 2 * c] += 1.0
        episodes[g, 0] = seen


LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


@_jit
def _surprise(z, log_tests):
    """``-log10`` of the two-sided normal tail of ``z >= 0`` times the number of tests, >= 0."""
    if z < 30.0:
        log_p = math.log(math.erfc(z / math.sqrt(2.0)))
    else:  # erfc underflows: the asymptotic series of the normal tail
        z2 = z * z
        log_p = math.log(2.0) - z2 / 2.0 - math.log(z) - LOG_SQRT_2PI + math.log1p(-1.0 / z2)
    return max(-(log_p + log_tests) / math.log(10.0), 0.0)


@_jit
def _components(z, cap, others, muted, back, log_tests, zero_below, out):
    """Surprise of each component (c, n); see ``evidence.component_stats``."""
    n_det, p, n = z.shape
    n_other = others.shape[0]
    drift = n_other - 1
    out[:] = 0.0
    for c in range(n_det + n_other):  # row by row: every array is read in order
        lingering = c in (1, 2, 3) or c == n_det + drift
        for f in range(p):
            for i in range(n):
                if muted[f, i] or (lingering and back[f, i]):
                    continue
                level = z[0, f, i]
                if c < n_det:
                    v = min(abs(z[c, f, i]), cap[f, i])
                    if c == 1 and z[1, f, i] * level <= 0.0:
                        continue
                else:
                    x = others[c - n_det, f, i]
                    v = abs(x)
                    if c - n_det == drift and x * level <= 0.0:
                        continue
                if v > out[c, i]:
                    out[c, i] = v
        for i in range(n):  # surprise 0 (p * tests >= 1) up to zero_below: no tail to compute
            v = out[c, i]
            out[c, i] = _surprise(v, log_tests) if v > zero_below else 0.0


@_jit
def _segment_scan(v, decay, order, bounds, init, before, final):
    """Per row and segment (positions ``order[bounds[s]:bounds[s + 1]]``, in event order):
    ``y = decay * y + v`` from ``init``; the state before each event and after each segment."""
    for r in range(v.shape[0]):
        d = decay[r]
        for s in range(bounds.shape[0] - 1):
            y = init[r, s]
            for j in range(bounds[s], bounds[s + 1]):
                t = order[j]
                before[r, t] = y
                y = d * y + v[r, t]
            final[r, s] = y


def segment_scan() -> Any:
    """The exponentially weighted scan of segments in any layout."""
    return _segment_scan


def compiled() -> Any:
    """The calibration kernel (compiled on its first call; cached on disk where the package
    is writable)."""
    return _run


def components() -> Any:
    """The component-statistics kernel."""
    return _components
