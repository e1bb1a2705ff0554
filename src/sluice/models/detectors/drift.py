"""Slow drifts: a fast exponentially weighted mean of a feature pulling away from a slow one.

A linear ramp of slope ``b`` (per event) opens a steady gap of ``b * (slow - fast)`` between
an EW mean over ``fast`` events and one over ``slow`` events, while each single value stays
unremarkable, so the level detector only sees it late. The gap is measured in the feature's
long-horizon EW standard deviation and divided by its own standard error under white noise.
A step (a level shift or a regime change) also opens the gap, but it closes again within
about ``slow`` events as the slow mean catches up, so a new regime is not flagged for long.
Seasonal swings are far slower than the drifts sought, and the long-horizon deviation already
holds their spread, so they open little gap. The gap only counts while the recent values stand
away from the long-horizon mean on its side, by :data:`LEVEL` deviations unless the gap itself
is beyond :data:`CLEAR` (a feature with a slow swing of its own has a wide deviation, which
would hide its drifts for long). A gap opposite to a recent drift of the key (see
:class:`DriftParams` ``memory``) is the return to normal after it - the slow mean still
remembers the incident and the long-horizon mean was pulled along - not a new drift.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from sluice.models.detectors.scan import Segments, decayed_max, ew_scan_stacked

# weights and sums of the fast and slow EW means; decayed maxima of the statistic up and down
DRIFT_STATE = ("fw", "fa", "sw", "sa", "up", "down")
LEVEL = 1.75
CLEAR = 5.0  # a gap statistic that counts whatever the level of the recent values
RECENT = 3.0  # a drift statistic still remembered beyond this blocks the opposite direction


@dataclass(frozen=True)
class DriftParams:
    """Horizons (events) of the fast and slow means, and of the memory of recent drifts."""

    fast: int = 10
    slow: int = 60
    memory: int = 150

    @property
    def decays(self) -> tuple[float, float]:
        """EW decay factors of the fast and slow means."""
        return 1.0 - 1.0 / self.fast, 1.0 - 1.0 / self.slow

    @property
    def noise_sd(self) -> float:
        """Standard deviation of ``fast mean - slow mean`` for unit white noise (steady state)."""
        a, b = 1.0 / self.fast, 1.0 / self.slow
        cross = a * b / (1.0 - (1.0 - a) * (1.0 - b))
        return float(np.sqrt(a / (2.0 - a) + b / (2.0 - b) - 2.0 * cross))


class DriftScores(NamedTuple):
    """Signed drift statistic (p, n), where it is clear of the long-horizon spread, where the
    recent values return from a recent drift (p, n), and the final state."""

    z: np.ndarray
    clear: np.ndarray
    returning: np.ndarray
    state: dict[str, np.ndarray]


def drift_scores(
    X: np.ndarray,
    ref: np.ndarray,
    sd: np.ndarray,
    level: np.ndarray,
    ready: np.ndarray,
    segs: Segments,
    init: dict[str, np.ndarray],
    params: DriftParams,
    centred: tuple[np.ndarray, np.ndarray] | None = None,
) -> DriftScores:
    """Drift statistics of a key-sorted batch ``X`` (p, n) (see :class:`DriftScores`; clear of
    the long-horizon spread: see :data:`LEVEL`).

    ``ref`` (p, m) is each segment's reference level (values are summed relative to it), ``sd``
    (p, n) the long-horizon deviation before each event, ``level`` (p, n) the short-horizon mean
    deviation from the long-horizon mean (in those deviations) and ``ready`` where both are
    usable. ``centred``: where ``X`` is finite and ``X - ref`` there (else 0), if known.
    """
    if centred is None:
        m = np.isfinite(X)
        centred = m, np.where(m, X - ref[..., segs.seg], 0.0)
    rows = np.empty((4, *X.shape))
    np.copyto(rows[0], centred[0])
    rows[1] = centred[1]
    rows[2:] = rows[:2]
    fast, slow = params.decays
    decay = np.array([fast, fast, slow, slow])
    sums = DRIFT_STATE[:4]
    before, final = ew_scan_stacked(rows, decay, segs, np.array([init[k] for k in sums]))
    # the means include the current event
    before *= decay[:, None, None]
    before += rows
    fw, fa, sw, sa = before
    gap = fa / np.maximum(fw, 1e-12) - sa / np.maximum(sw, 1e-12)
    ok = ready & (sw > 0.5 * params.slow) & (gap * level > 0.0)
    z = np.where(ok, gap / (np.maximum(sd, 1e-12) * params.noise_sd), 0.0)
    out = dict(zip(sums, final, strict=True))
    p = X.shape[0]
    # the largest recent statistic up and down, each decayed over ``memory`` events
    signed = np.empty((2 * p, z.shape[1]))
    np.maximum(z, 0.0, out=signed[:p])
    np.minimum(z, 0.0, out=signed[p:])
    np.negative(signed[p:], out=signed[p:])
    forget = 1.0 - 1.0 / params.memory
    recent, final = decayed_max(signed, forget, segs, np.concatenate([init["up"], init["down"]]))
    out["up"], out["down"] = final[:p], final[p:]
    # recent values on the side opposite to a recent drift: the return to normal after it
    returning = np.where(level > 0, recent[p:], np.where(level < 0, recent[:p], 0.0)) >= RECENT
    z[returning] = 0.0
    clear = (np.abs(level) >= LEVEL) | (np.abs(z) >= CLEAR)
    return DriftScores(z, clear, returning, out)


def rebase(state: dict[str, np.ndarray], delta: np.ndarray) -> None:
    """Keep the sums relative to a reference level that moved by ``delta`` (p, m)."""
    state["fa"] = state["fa"] - state["fw"] * delta
    state["sa"] = state["sa"] - state["sw"] * delta
