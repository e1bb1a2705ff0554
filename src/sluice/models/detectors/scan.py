"""Segmented (per-key) causal scans over a batch sorted by key, without a per-event loop.

A batch is sorted by key slot so that the events of one key form a contiguous *segment*,
in arrival order. Exponentially weighted sums ``y_t = d * y_{t-1} + v_t`` are run over the
whole sorted batch with one IIR filter, then each segment is corrected for the value leaked
in from the previous segment and for its own initial state: the correction at offset ``k``
of a segment is ``d ** (k + 1) * (init - y_before_segment)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.signal import lfilter


@dataclass
class Segments:
    """Layout of a key-sorted batch: where each key's run of events starts and ends."""

    order: np.ndarray  # batch row of each sorted position
    slot: np.ndarray  # state slot of each segment
    seg: np.ndarray  # segment of each sorted position
    start: np.ndarray  # sorted position of each segment's first event
    last: np.ndarray  # sorted position of each segment's last event
    offset: np.ndarray  # position of each event inside its segment (0-based)
    _powers: dict[float, np.ndarray] = field(default_factory=dict)

    @classmethod
    def from_slots(cls, slots: np.ndarray) -> Segments:
        """Group batch rows by slot, keeping arrival order inside each group."""
        n = slots.shape[0]
        if n and np.all(slots == slots[0]):
            order = np.arange(n)
            s = slots
        else:
            order = np.argsort(slots, kind="stable")
            s = slots[order]
        is_start = np.ones(n, dtype=bool)
        if n:
            is_start[1:] = s[1:] != s[:-1]
        start = np.flatnonzero(is_start)
        seg = np.cumsum(is_start) - 1
        last = np.append(start[1:] - 1, n - 1) if n else start
        offset = np.arange(n) - start[seg] if n else np.zeros(0, dtype=np.int64)
        return cls(order, s[start] if n else s, seg, start, last, offset)

    @property
    def lengths(self) -> np.ndarray:
        """Number of events of each segment."""
        return self.last - self.start + 1

    @property
    def n(self) -> int:
        """Number of events."""
        return int(self.order.shape[0])

    def power(self, decay: float) -> np.ndarray:
        """``decay ** (offset + 1)`` for every event (cached per decay)."""
        cached = self._powers.get(decay)
        if cached is None:
            exponent = np.maximum((self.offset + 1.0) * np.log(decay), -690.0)
            cached = np.exp(exponent)
            self._powers[decay] = cached
        return cached

    def shift(self, values: np.ndarray, init: np.ndarray) -> np.ndarray:
        """Value of the previous event of the same key (``init`` for a segment's first event)."""
        out = np.empty_like(values)
        out[..., 1:] = values[..., :-1]
        out[..., self.start] = init
        return out


def ew_scan(
    v: np.ndarray, decay: float, segs: Segments, init: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-key ``y_t = decay * y_{t-1} + v_t`` over rows of ``v`` (r, n).

    Returns the state *before* each event (r, n) and each segment's final state (r, m).
    """
    y = lfilter([1.0], [1.0, -decay], v, axis=-1)
    prev = np.zeros(init.shape)
    has_prev = segs.start > 0
    prev[..., has_prev] = y[..., segs.start[has_prev] - 1]
    gap = np.repeat(init - prev, segs.lengths, axis=-1)
    gap *= segs.power(decay)
    y += gap
    return segs.shift(y, init), y[..., segs.last]


def last_valid(
    x: np.ndarray, valid: np.ndarray, segs: Segments, init: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Most recent valid value of the same key before each event, and after each segment."""
    idx = np.broadcast_to(np.arange(segs.n), x.shape)
    pos = np.maximum.accumulate(np.where(valid, idx, -1), axis=-1)
    seg_start = segs.start[segs.seg]
    inside = pos >= seg_start
    filled = np.where(
        inside, np.take_along_axis(x, np.maximum(pos, 0), axis=-1), init[..., segs.seg]
    )
    return segs.shift(filled, init), filled[..., segs.last]


def run_length(
    repeat: np.ndarray, segs: Segments, init: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Length of the run of consecutive ``repeat`` events ending at each event (carrying init)."""
    idx = np.broadcast_to(np.arange(segs.n), repeat.shape)
    last_break = np.maximum.accumulate(np.where(repeat, -1, idx), axis=-1)
    seg_start = segs.start[segs.seg]
    run = np.where(last_break >= seg_start, idx - last_break, init[..., segs.seg] + segs.offset + 1)
    run = np.where(repeat, run, 0)
    return run, run[..., segs.last]


def decayed_max(
    v: np.ndarray, decay: float, segs: Segments, init: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-key ``M_t = max(v_t, decay * M_{t-1})`` for ``v >= 0``; before each event and final.

    In log space this is a cumulative maximum of ``log v_j - j log decay``; segments are kept
    apart by adding a per-segment offset larger than any in-segment range.
    """
    ln_d = np.log(decay)
    k = segs.offset.astype(np.float64)
    logv = np.log(np.maximum(v, 1e-300)) - k * ln_d
    log_init = np.log(np.maximum(init, 1e-300))[..., segs.seg] + ln_d
    first = np.maximum(logv, log_init)
    span = float(np.max(np.abs(first))) * 2.0 + 1.0 if first.size else 1.0
    lifted = first + segs.seg * span
    m = np.maximum.accumulate(lifted, axis=-1) - segs.seg * span + k * ln_d
    after = np.exp(np.minimum(m, 700.0))
    after = np.where(after <= 1e-299, 0.0, after)
    return segs.shift(after, init), after[..., segs.last]


def latch(
    start: np.ndarray, keep: np.ndarray, segs: Segments, init: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-key ``on_t = start_t or (on_{t-1} and keep_t)`` (``init`` per segment); and final."""
    idx = np.broadcast_to(np.arange(segs.n), start.shape)
    last_start = np.maximum.accumulate(np.where(start, idx, -1), axis=-1)
    last_break = np.maximum.accumulate(np.where(keep | start, -1, idx), axis=-1)
    seg_start = segs.start[segs.seg]
    carried = (init[..., segs.seg] > 0) & (last_break < seg_start)
    on = ((last_start >= seg_start) & (last_start > last_break)) | carried
    return on, on[..., segs.last].astype(np.float64)
