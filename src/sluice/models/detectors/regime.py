"""Global regime changes: when most keys shift the same way at once, it is not an anomaly.

Each key keeps the sign of its latest level deviation beyond :data:`SHIFTED` sigma per
feature (``+1``, ``0`` or ``-1``). Walking the batch in arrival order, the number of keys
currently shifted up (down) is a running sum of the changes of that sign, so the share of
shifted keys is known causally at every event. While at least :data:`MIN_KEYS` keys are
active and more than :data:`SHARE` of them are shifted the same way, a key shifted that way
enters a *regime* state for that feature, which lasts as long as its deviation persists; the
detectors of that feature are silenced meanwhile, while the key's model adapts.
"""

from __future__ import annotations

import numpy as np

from sluice.models.detectors.scan import Segments, latch

MIN_KEYS = 10
SHARE = 0.5
SHIFTED = 3.0  # level deviation (sigma) that counts a key as shifted
PERSISTS = 1.0  # ... and that keeps a key in its regime state


def shift_counts(dev: np.ndarray, used: np.ndarray) -> np.ndarray:
    """Keys shifted up and down per feature, from the stored signs (2, p)."""
    live = dev[used]
    return np.stack([(live > 0).sum(axis=0), (live < 0).sum(axis=0)]).astype(np.float64)


def regime_mask(
    level: np.ndarray,
    short_mean: np.ndarray,
    ready: np.ndarray,
    segs: Segments,
    init: dict[str, np.ndarray],
    counts: np.ndarray,
    active: np.ndarray,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Events (p, n) inside a global regime change for their key, and the final key state.

    ``init`` holds each segment's ``dev`` and ``reg`` (p, m); ``counts`` (2, p) the shifted
    keys before the batch; ``active`` (n,) the active keys at each sorted event.
    """
    dev = np.where(ready, np.sign(level) * (np.abs(level) > SHIFTED), 0.0)
    held = segs.shift(dev, init["dev"])
    dev = np.where(ready, dev, held)
    enough = active >= MIN_KEYS
    start = np.zeros(level.shape, dtype=bool)
    # a key can only enter a regime where it is shifted itself: count the others just there
    f, i = np.nonzero(ready & enough & (np.abs(level) > SHIFTED))
    if f.size:
        up, down = _running_counts(dev, held, segs, counts, f, i)
        start[f, i] = np.where(level[f, i] > 0, up, down) > SHARE * active[i]
    keep = (np.abs(short_mean) > PERSISTS) | (np.abs(level) > SHIFTED) | ~ready
    reg, reg_final = latch(start, keep, segs, init["reg"])
    return reg, {"dev": dev[:, segs.last], "reg": reg_final}


def _running_counts(
    dev: np.ndarray,
    held: np.ndarray,
    segs: Segments,
    counts: np.ndarray,
    f: np.ndarray,
    i: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Keys shifted up and down for feature ``f`` just after each event ``i``, in arrival order.

    Only events whose sign changed move the counts, so only those are summed.
    """
    n = dev.shape[1]
    cf, ci = np.nonzero(dev != held)
    key = cf * n + segs.order[ci]
    sort = np.argsort(key, kind="stable")
    key = key[sort]
    query = f * n + segs.order[i]
    hi = np.searchsorted(key, query, side="right")
    lo = np.searchsorted(key, f * n, side="left")
    out = []
    for k, sign in enumerate((1.0, -1.0)):
        change = (dev[cf, ci] == sign).astype(np.float64) - (held[cf, ci] == sign)
        total = np.concatenate([[0.0], np.cumsum(change[sort])])
        out.append(counts[k][f] + (total[hi] - total[lo]))
    return out[0], out[1]
