"""Global regime changes: when most keys shift the same way at once, it is not an anomaly.

Each key keeps the sign of its latest shift per feature (``+1``, ``0`` or ``-1``): a level
deviation beyond :data:`SHIFTED` sigma, or a recent mean beyond :data:`MEAN_SHIFTED` sigma (a key
with a wide spread of its own - a slow swing - moves with the others without a value standing
out). Walking the batch in arrival order, the number of keys currently shifted up (down) is a
running sum of the changes of that sign, so the share of shifted keys is known causally at every
event (only events whose sign changed move the counts, and only events of keys that move
themselves need them, so both are handled sparsely and a batch can be processed in chunks of
keys, see :class:`Shifts`). While at least :data:`MIN_KEYS` keys are active and more than
:data:`SHARE` of them are shifted the same way, a key that moves that way (shifted itself, or
its recent mean beyond :data:`PERSISTS` sigma) enters a *regime* state for that feature, which
lasts as long as its deviation persists (or its slow-drift gap stays open, see
:mod:`sluice.models.detectors.drift`); the detectors of that feature are silenced meanwhile,
while the key's model adapts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sluice.models.detectors.scan import Segments, latch

MIN_KEYS = 10
SHARE = 0.25  # a quarter: independent incidents rarely move that many keys the same way at once
SHIFTED = 3.0  # level deviation (sigma) that counts a key as shifted
MEAN_SHIFTED = 2.5  # recent mean deviation (sigma) that counts a key as shifted
PERSISTS = 1.0  # ... that lets a key enter a regime and keeps it there


def shift_counts(dev: np.ndarray, used: np.ndarray) -> np.ndarray:
    """Keys shifted up and down per feature, from the stored signs (2, p)."""
    live = dev[used]
    return np.array([(live > 0).sum(axis=0), (live < 0).sum(axis=0)]).astype(np.float64)


def signs(
    level: np.ndarray, short_mean: np.ndarray, ready: np.ndarray, segs: Segments, init: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Shift sign of each event (p, n), held through events that are not ready, and the one
    before it (``init`` holds each segment's last sign)."""
    moved = np.where(np.abs(short_mean) > MEAN_SHIFTED, short_mean, 0.0)
    dev = np.where(ready, np.sign(np.where(np.abs(level) > SHIFTED, level, moved)), 0.0)
    held = segs.shift(dev, init)
    return np.where(ready, dev, held), held


@dataclass
class Shifts:
    """Sign changes of a whole batch, keyed by (feature, batch row), for running counts."""

    n: int
    counts: np.ndarray  # keys shifted up and down per feature before the batch (2, p)
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)
    key: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    total: np.ndarray = field(default_factory=lambda: np.zeros((2, 1)))

    def add(self, dev: np.ndarray, held: np.ndarray, rows: np.ndarray) -> None:
        """Record the sign changes of one chunk whose positions are batch ``rows``."""
        f, i = np.nonzero(dev != held)
        if not f.size:
            return
        d, h = dev[f, i], held[f, i]
        delta = np.array([(d == s).astype(np.float64) - (h == s) for s in (1.0, -1.0)])
        self.parts.append((f * self.n + rows[i], delta, f))

    def close(self) -> None:
        """Sort all recorded changes by feature, then arrival."""
        if not self.parts:
            return  # no change: the counts stay those before the batch
        key = np.concatenate([k for k, _, _ in self.parts])
        delta = np.concatenate([d for _, d, _ in self.parts], axis=1)
        sort = np.argsort(key, kind="stable")
        self.key = key[sort]
        self.total = np.concatenate([np.zeros((2, 1)), np.cumsum(delta[:, sort], axis=1)], axis=1)

    def running(self, f: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Keys shifted up and down (2, k) for features ``f`` just after batch rows ``rows``."""
        hi = np.searchsorted(self.key, f * self.n + rows, side="right")
        lo = np.searchsorted(self.key, f * self.n, side="left")
        return self.counts[:, f] + (self.total[:, hi] - self.total[:, lo])


def regime_mask(
    level: np.ndarray,
    short_mean: np.ndarray,
    ready: np.ndarray,
    segs: Segments,
    init: np.ndarray,
    shifts: Shifts,
    active: np.ndarray,
    lingering: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Events (p, n) inside a global regime change for their key, and each key's final state.

    ``init`` holds each segment's regime flags (p, m); ``active`` (n,) the active keys at
    each event; ``shifts`` the batch's sign changes (closed); ``lingering`` (p, n) where the
    key's deviation lingers in slower statistics (which keeps a regime state on).
    """
    start = np.zeros(level.shape, dtype=bool)
    # a key can only enter a regime where it moves itself: count the others just there
    shifted = np.abs(level) > SHIFTED
    persists = np.abs(short_mean) > PERSISTS
    f, i = np.nonzero(ready & (active >= MIN_KEYS) & (shifted | persists))
    if f.size:
        side = np.where(shifted[f, i], level[f, i], short_mean[f, i])
        up, down = shifts.running(f, segs.order[i])
        start[f, i] = np.where(side > 0, up, down) > SHARE * active[i]
    keep = persists | shifted | ~ready | lingering
    return latch(start, keep, segs, init)
