"""Seasonality: how far a value is from what the same point of the previous cycles showed.

Each key keeps a ring buffer of its last ``window`` values per feature (float32, indexed by
the key's event count, read and written in place). Every ``refresh`` events of a key (more
often while its history is short) the buffer's autocorrelation - masked for gaps, via one
FFT - is searched for a dominant period: the shortest strong local peak that follows a clear
dip. The period is trusted only when predicting each value from the same point of the last
two cycles leaves a residual scale well under the window's spread (the season explains most
of the variance). The statistic is the residual against whichever earlier cycle agrees
best, give or take one event (so one odd cycle does not echo a period later, and a pattern
that wanders by an event is not an anomaly), over that residual's scale fitted to its tail
(see :func:`residual_scale`). Where a season is trusted it also caps the other detectors
(see :func:`explained`). Everything is keyed to deterministic per-key event counts, so
results do not depend on how a stream is cut into batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sluice.models.detectors.scan import Segments

SEASON_STATE = ("sp", "ss")  # per feature: detected period (0 = none), residual scale
MIN_PERIOD = 4
MIN_PAIRS = 32  # lagged pairs needed before a lag's autocorrelation is trusted
MIN_PEAK = 0.5  # autocorrelation at the period
MIN_DIP = 0.3  # the peak must rise this much above the lowest autocorrelation before it
NEAR_BEST = 0.1  # a shorter peak this close to the best one is preferred (the fundamental)
MAX_RATIO = 0.5  # residual scale / window spread above which the season is not trusted
QUANTILES = ((0.5, 0.6745), (0.9, 1.645), (0.99, 2.576))
CHUNK = 2048  # refresh windows analysed at once (bounds memory)


@dataclass
class SeasonResult:
    """Seasonal statistic (p, n), the period and the expected value per event, final state."""

    z: np.ndarray
    period: np.ndarray
    expected: np.ndarray
    state: dict[str, np.ndarray]


@dataclass
class History:
    """Values of each key by event index: this batch first, else the key's ring buffer."""

    xs: np.ndarray  # key-sorted batch values as float32 (p, n)
    segs: Segments
    c0: np.ndarray  # event count of each segment's key before the batch (m,)
    buf: np.ndarray  # ring buffers (slots, window, p) float32
    real: np.ndarray  # segment's slot holds stored state (m,)

    def at(self, seg: np.ndarray, tau: np.ndarray, feat: np.ndarray) -> np.ndarray:
        """Values of features ``feat`` of segments ``seg`` at key event indexes ``tau`` (or NaN)."""
        return self._lookup(seg, tau, feat)

    def values(self, seg: np.ndarray, tau: np.ndarray) -> np.ndarray:
        """Values of every feature, ``tau.shape + (p,)``, of segments ``seg`` at key event
        indexes ``tau`` (or NaN)."""
        return self._lookup(seg, tau, None)

    def _lookup(self, seg: np.ndarray, tau: np.ndarray, feat: np.ndarray | None) -> np.ndarray:
        window = self.buf.shape[1]
        c0 = self.c0[seg]
        every = feat is None
        out = np.full((*tau.shape, self.xs.shape[0]) if every else tau.shape, np.nan)
        inb = tau >= c0
        pos = self.segs.position(seg[inb], tau[inb] - c0[inb])
        out[inb] = self.xs[:, pos].T if feat is None else self.xs[feat[inb], pos]
        old = ~inb & (tau >= 0) & (tau >= c0 - window) & self.real[seg]
        if old.any():
            slot, ring = self.segs.slot[seg[old]], tau[old] % window
            out[old] = self.buf[slot, ring] if feat is None else self.buf[slot, ring, feat[old]]
        return np.where(np.isfinite(out), out, np.nan)

    def write(self) -> None:
        """Store the batch's values in the ring buffers (the last ``window`` of each key)."""
        window = self.buf.shape[1]
        segs = self.segs
        if segs.lengths.max() <= window:  # every value of the batch is kept
            seg, tau, values = segs.seg, self.c0[segs.seg] + segs.offset, self.xs.T
        else:
            idx = np.flatnonzero(segs.offset >= (segs.lengths - window)[segs.seg])
            seg = segs.seg[idx]
            tau, values = self.c0[seg] + segs.offset[idx], self.xs[:, idx].T
        self.buf[segs.slot[seg], tau % window] = values


def ring_mask(count: np.ndarray, used: np.ndarray, window: int) -> np.ndarray:
    """Ring positions (slots, window) that hold a value of the slot's key: the first
    ``min(count, window)`` ones (event ``tau`` is kept at ``tau % window``)."""
    held = np.where(used, np.minimum(count, window), 0)
    return np.arange(window)[None, :] < held[:, None]


def detect(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dominant period (0 = none) and residual scale of each row of windows ``w`` (r, L)."""
    r, length = w.shape
    m = np.isfinite(w)
    cnt = m.sum(axis=1)
    mean = np.where(m, w, 0.0).sum(axis=1) / np.maximum(cnt, 1)
    x = np.where(m, w - mean[:, None], 0.0)
    size = 2 * length
    fx = np.fft.rfft(x, size, axis=1)
    num = np.fft.irfft((fx * np.conj(fx)).real, size, axis=1)[:, :length]
    den = np.broadcast_to(np.arange(length, 0, -1, dtype=np.float64), (r, length)).copy()
    gaps = np.flatnonzero(cnt < length)  # lagged pairs of windows with gaps: mask correlation
    if gaps.size:
        fm = np.fft.rfft(m[gaps].astype(np.float64), size, axis=1)
        den[gaps] = np.rint(np.fft.irfft(fm * np.conj(fm), size, axis=1)[:, :length])
    var = num[:, 0] / np.maximum(den[:, 0], 1.0)
    top = length // 2 + 2  # periods up to half the window (two cycles in view)
    num, den = num[:, :top], den[:, :top]
    lags = np.arange(top)
    ok = (den >= np.maximum(lags, MIN_PAIRS)) & (var[:, None] > 0)
    acf = np.where(ok, num / np.maximum(den, 1.0) / np.where(var > 0, var, 1.0)[:, None], np.nan)
    acf[:, 0] = 1.0
    filled = np.where(np.isnan(acf), 1.0, acf)
    dip = np.minimum.accumulate(filled, axis=1)
    peak = np.zeros_like(ok)
    inner = slice(MIN_PERIOD, top - 1)
    core = filled[:, inner]
    peak[:, inner] = (
        ok[:, inner]
        & ok[:, MIN_PERIOD + 1 :]
        & (core >= filled[:, MIN_PERIOD - 1 : top - 2])
        & (core > filled[:, MIN_PERIOD + 1 :])
        & (core >= MIN_PEAK)
        & (core - dip[:, MIN_PERIOD - 1 : top - 2] >= MIN_DIP)
    )
    strength = np.where(peak, filled, -np.inf)
    best = strength.max(axis=1)
    near = peak & (strength >= best[:, None] - NEAR_BEST)
    period = np.where(near.any(axis=1), np.argmax(near, axis=1), 0)
    scale = np.full(r, np.inf)
    rows = np.flatnonzero(period > 0)
    if rows.size:
        scale[rows] = residual_scale(w[rows], period[rows])
    sd = np.sqrt(np.maximum(var, 0.0))
    trusted = (period > 0) & (scale <= MAX_RATIO * sd)
    floor = 0.02 * sd + 1e-9 + 1e-6 * np.abs(mean)
    return np.where(trusted, period, 0), np.where(trusted, np.maximum(scale, floor), 0.0)


def residual_scale(w: np.ndarray, period: np.ndarray) -> np.ndarray:
    """Scale of the best-match residual inside each window row, fitted to its tail too.

    The larger of the median-, 90%- and 99%-quantile based normal scales, so heavy tails
    (a spike that wanders by more than one event, counts that are mostly equal) do not
    turn ordinary events into many-sigma ones.
    """
    r, length = w.shape
    t = np.arange(length)[None, :]
    p = np.maximum(period, 1)[:, None]
    e = _best_residual(w, [_shifted(w, t - lag) for lag in _lags(p)])
    a = np.abs(e)
    a = np.where(np.isfinite(a), a, np.inf)
    n = np.isfinite(a).sum(axis=1)
    srt = np.sort(a, axis=1)
    scale = np.zeros(r)
    for q, z in QUANTILES:
        idx = np.minimum((n * q).astype(np.int64), np.maximum(n - 1, 0))
        scale = np.maximum(scale, np.take_along_axis(srt, idx[:, None], axis=1)[:, 0] / z)
    return np.where(n >= MIN_PAIRS, scale, np.inf)


def _lags(period: np.ndarray) -> list[np.ndarray]:
    """Lags compared with: one and two periods back, each give or take one event."""
    return [k * period + d for k in (1, 2) for d in (0, -1, 1)]


def _shifted(w: np.ndarray, idx: np.ndarray) -> np.ndarray:
    got = np.take_along_axis(w, np.clip(idx, 0, w.shape[1] - 1), axis=1)
    return np.where(idx >= 0, got, np.nan)


def _best_residual(x: np.ndarray, earlier: list[np.ndarray]) -> np.ndarray:
    """Residual against the earlier value that agrees best (ignoring missing ones)."""
    best = np.full(np.broadcast_shapes(x.shape, earlier[0].shape), np.nan)
    for v in earlier:
        e = x - v
        better = np.isnan(best) | (np.abs(e) < np.abs(best))
        best = np.where(better & ~np.isnan(e), e, best)
    return best


def _multiples(lo: np.ndarray, hi: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Segment and value of every positive multiple of ``step`` in ``[lo, hi)`` per segment."""
    first = np.maximum(-(-lo // step), 1) * step
    count = np.maximum((hi - 1 - first) // step + 1, 0)
    base = np.concatenate([[0], np.cumsum(count)[:-1]]).astype(np.int64)
    seg = np.repeat(np.arange(len(lo)), count)
    k = np.arange(int(count.sum())) - base[seg]
    return seg, first[seg] + k * step


def refresh_points(
    c0: np.ndarray, lengths: np.ndarray, every: int, window: int
) -> tuple[np.ndarray, np.ndarray]:
    """Segment and key event index of each refresh inside the batch, sorted by both.

    A key is re-analysed every ``every`` events, and four times as often while its history
    is shorter than the window (so a season is found as soon as two cycles are in view).
    """
    if lengths.size and lengths.max() == 1:  # one event per key: is it a refresh point?
        step = np.where(c0 < window, max(every // 4, 1), every)
        seg = np.flatnonzero((c0 > 0) & (c0 % step == 0))
        return seg, c0[seg]
    end = c0 + lengths
    early = _multiples(c0, np.minimum(end, window), max(every // 4, 1))
    late = _multiples(np.maximum(c0, window), end, every)
    seg = np.concatenate([early[0], late[0]])
    q = np.concatenate([early[1], late[1]])
    order = np.lexsort((q, seg))
    return seg[order], q[order]


def season_scores(
    x: np.ndarray,
    hist: History,
    init: dict[str, np.ndarray],
    every: int,
    refreshed: dict[int, tuple[np.ndarray, np.ndarray]] | None = None,
) -> SeasonResult:
    """Seasonal statistic of each event of the key-sorted batch ``x`` (p, n).

    ``refreshed``: for one event per key scored without learning, the period and scale of
    the keys analysed before at their current refresh point, by slot (what is missing is
    analysed and added; valid until the keys' state changes).
    """
    p = x.shape[0]
    segs = hist.segs
    window = hist.buf.shape[1]
    rseg, rq = refresh_points(hist.c0, segs.lengths, every, window)
    period = init["sp"][:, segs.seg]
    scale = init["ss"][:, segs.seg]
    fin_p, fin_s = init["sp"], init["ss"]
    if rseg.size:
        fin_p, fin_s = fin_p.copy(), fin_s.copy()
        if refreshed is None:
            rp, rs = _refresh(hist, rseg, rq, p, window)
        else:
            rp, rs = _refresh_kept(hist, rseg, rq, p, window, refreshed)
        span = int(max(rq.max(), (hist.c0 + segs.lengths).max())) + 1
        tau = hist.c0[segs.seg] + segs.offset
        j = np.searchsorted(rseg * span + rq, segs.seg * span + tau, side="right") - 1
        after = (j >= 0) & (rseg[np.maximum(j, 0)] == segs.seg)
        j = np.where(after, j, 0)
        period = np.where(after[None], rp[:, j], period)
        scale = np.where(after[None], rs[:, j], scale)
        last = np.flatnonzero(np.append(rseg[1:] != rseg[:-1], True))
        fin_p[:, rseg[last]], fin_s[:, rseg[last]] = rp[:, last], rs[:, last]
    z, expected = _statistic(x, hist, period, scale)
    return SeasonResult(z, period, expected, {"sp": fin_p, "ss": fin_s})


def _refresh_kept(
    hist: History,
    rseg: np.ndarray,
    rq: np.ndarray,
    p: int,
    window: int,
    refreshed: dict[int, tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_refresh` of one refresh per key, taken from ``refreshed`` (by slot) where
    there, else analysed and kept there (each window is analysed on its own)."""
    slots = hist.segs.slot[rseg].tolist()
    missing = [j for j, slot in enumerate(slots) if slot not in refreshed]
    if missing:
        rp, rs = _refresh(hist, rseg[missing], rq[missing], p, window)
        for k, j in enumerate(missing):
            refreshed[slots[j]] = (rp[:, k].copy(), rs[:, k].copy())
    return (
        np.array([refreshed[slot][0] for slot in slots]).T,
        np.array([refreshed[slot][1] for slot in slots]).T,
    )


def _refresh(
    hist: History, rseg: np.ndarray, rq: np.ndarray, p: int, window: int
) -> tuple[np.ndarray, np.ndarray]:
    """Period and scale (p, k) from the values before each refresh point.

    A key with a short history is analysed over the shortest of ``window``, ``window / 2``,
    ``window / 4`` ... that holds all of it (cheaper, and the same wherever a batch ends).
    """
    periods, scales = np.zeros((p, rseg.size)), np.zeros((p, rseg.size))
    length = np.full(rseg.size, window)
    while length.min() // 2 >= 4 * MIN_PERIOD and (rq <= length // 2).any():
        length = np.where(rq <= length // 2, length // 2, length)
    for size in np.unique(length).tolist():
        sel = np.flatnonzero(length == size)
        for lo in range(0, sel.size, CHUNK):
            idx = sel[lo : lo + CHUNK]
            tau = rq[idx, None] - size + np.arange(size)[None, :]
            seg = np.broadcast_to(rseg[idx, None], tau.shape)
            values = hist.values(seg.ravel(), tau.ravel()).reshape(idx.size, size, p)
            w = values.transpose(0, 2, 1).reshape(idx.size * p, size)
            rp, rs = detect(w)
            periods[:, idx] = rp.reshape(idx.size, p).T
            scales[:, idx] = rs.reshape(idx.size, p).T
    return periods, scales


def _statistic(
    x: np.ndarray, hist: History, period: np.ndarray, scale: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    p, n = x.shape
    segs = hist.segs
    z = np.zeros((p, n))
    expected = np.full((p, n), np.nan)
    on = (period > 0) & np.isfinite(x)
    f, i = np.nonzero(on)
    if f.size == 0:
        return z, expected
    seg = segs.seg[i]
    tau = hist.c0[seg] + segs.offset[i]
    lag = period[f, i].astype(np.int64)
    e = _best_residual(x[f, i], [hist.at(seg, tau - k, f) for k in _lags(lag)])
    good = np.isfinite(e)
    z[f[good], i[good]] = e[good] / scale[f[good], i[good]]
    expected[f[good], i[good]] = x[f[good], i[good]] - e[good]
    return z, expected


def explained(z: np.ndarray, season: SeasonResult) -> np.ndarray:
    """Other detectors' statistics (d, p, n), capped where the season explains the event.

    Where a period is trusted, a value (or jump, or spread) the season expects is not an
    anomaly: no statistic may exceed the seasonal one in size.
    """
    cap = seasonal_cap(season)
    return np.clip(z, -cap[None], cap[None])


def seasonal_cap(season: SeasonResult) -> np.ndarray:
    """Largest size another statistic may have per event (p, n): ``inf`` without a season."""
    return np.where(np.isfinite(season.expected), np.abs(season.z), np.inf)
