"""Per-key calibration: turn a statistic into a tail probability learned from the key's own past.

Every statistic ``s`` handed in is a surprise on the ``-log10 p`` scale of some nominal model
(normal tails, a run-length model ...). Real data rarely follows the nominal model: an
autocorrelated series makes its level statistic heavy-tailed, a quantised sensor makes its
rate statistic lumpy. So each key keeps an exponentially decayed histogram of each statistic
(over about ``horizon`` of its events) and the statistic's tail is read from it:

* the key's ``1 - Q_TAIL`` quantile ``u`` is read off the histogram, and the share ``a`` of
  its events above it (``Q_TAIL``, or less where a statistic is mostly exactly 0);
* beyond ``u`` the tail is exponential in ``s`` (a power law in ``p``) with the mean excess
  ``m`` of the key's events over ``u``: ``p(s) = a * 10 ** (-lam * (s - u))``,
  ``lam = 1 / (m ln 10)``, never lighter than the nominal model (``lam <= 1``);
* the empirical tail share of the histogram and the nominal ``10 ** -s`` are floors under
  that model: a lumpy statistic (a quantised sensor's repeats, a count) is not trusted beyond
  what the key has shown, and a tail the key has not shown enough of is not taken to be
  lighter than the nominal model says; below ``u`` the empirical share is used as it is.

This is the peaks-over-threshold idea of SPOT (an extreme-value tail beyond a high empirical
quantile) with an exponential tail. On a stationary stream of any shape, ``p`` is then close
to uniform in its lower tail, so ``p <= a`` happens for about a share ``a`` of the events.
Events whose ``p`` is below :data:`EXCLUDE` are anomalies, not history: they do not enter the
histograms (far below the body quantiles, so this cannot feed back into the model), and a
sustained incident keeps its evidence instead of becoming the key's new normal within a few
blocks.

**Recurring extremes.** Exclusion has a budget: on a calibrated statistic an event is
excluded with probability about ``EXCLUDE``, so a key's *excluded episodes* (an excluded
event after :data:`EPISODE_GAP` events without one; a sustained incident is one episode)
number at most ``EXCLUDE`` times its recent trusted events. Each statistic counts its own
episodes (decayed over the calibration horizon); where they exceed that budget by
:data:`RECURRING_Z` Poisson standard deviations, the extremes are the key's normal
behaviour - bursts of a mostly idle counter, a spike every night - not anomalies: that
statistic then learns them like any other event; and where the combination's own extremes
recur, the open last bin of its histogram (beyond the scale, where positions are not kept)
counts as at least as extreme as any value in it: the published probability of such an
event is then no smaller than the share of such events the key has shown.

**Batch invariance.** A key's histogram is only rolled forward at key-local event counts: its
events are cut into blocks of ``block`` events, and every event of block ``k`` is calibrated
against the histogram of the events of blocks ``< k`` (decayed once per block). The result
depends on each key's sequence only, never on where micro-batches begin or end. The state of
a key is its *reference* histogram (blocks before its current block) and the *pending*
counts of its current block. A fresh key starts from a small prior histogram of the nominal
model, which the key's own events soon outweigh.

Whether an event enters the histograms depends on its own probability, so a key's blocks are
walked in order: by a small compiled kernel (numba, compiled on first use and cached on disk),
one pass over each key's events, the tail model refitted once per block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sluice.models.detectors.layout import Segments

# bin edges on the surprise scale: bin 0 holds exact zeros (a statistic with nothing to say),
# then fine bins where the tail quantile falls, coarse ones far in the tail
ATOM = 1e-9
EDGES = np.concatenate(
    [
        [0.0, ATOM],
        np.arange(0.25, 3.0, 0.25),
        np.arange(3.0, 6.0, 0.5),
        [6.0, 7.0, 8.5, 10.0, 13.0, 17.0, 24.0],
    ]
)
N_BINS = EDGES.shape[0]  # the last bin is open-ended
WIDTHS = np.append(np.diff(EDGES), 4.0)
MIDS = EDGES + WIDTHS / 2
Q_TAIL = 0.03
LAM_MIN = 0.05
PRIOR_EVENTS = 10.0  # weight of the nominal prior of a fresh key
EXCLUDE = 1e-3  # events at least this improbable do not enter the histograms
EPISODE_GAP = 50.0  # an excluded event after this many others starts an excluded episode
RECURRING_Z = 3.0  # Poisson sd above the budget of excluded episodes: extremes recur
# per key: EW count of its trusted events, then per statistic the EW count of its excluded
# episodes and the events since its last excluded one
EPISODE_STATE = "xe"


def _nominal_prior() -> np.ndarray:
    """Histogram of ``PRIOR_EVENTS`` events of a statistic that follows its nominal model."""
    tail = 10.0**-EDGES
    return PRIOR_EVENTS * (tail - np.append(tail[1:], 0.0))


PRIOR = _nominal_prior()


@dataclass(frozen=True)
class CalibrationParams:
    """How long a key remembers, and how often its reference is rolled forward (events)."""

    horizon: int = 2000
    block: int = 16

    @property
    def block_decay(self) -> float:
        """Decay of the reference histogram per block."""
        return float((1.0 - 1.0 / max(self.horizon, 2)) ** self.block)


def fresh_state(n_stats: int, m: int) -> np.ndarray:
    """Calibration state (m, 2, s, bins) of ``m`` fresh keys: reference (the prior), pending
    counts (none)."""
    state = np.zeros((m, 2, n_stats, N_BINS))
    state[:, 0] = PRIOR
    return state


def fresh_episodes(n_stats: int, m: int) -> np.ndarray:
    """Episode state (m, 1 + 2 s) of ``m`` fresh keys: no trusted events, and per statistic no
    excluded episode, the last one long ago."""
    return np.tile(np.concatenate([[0.0], np.tile([0.0, EPISODE_GAP], n_stats)]), (m, 1))


def unlearned_state(n_stats: int, count: np.ndarray, params: CalibrationParams) -> np.ndarray:
    """Calibration state (m, 2, s, bins) of keys that saw ``count`` events without learning
    from any: the prior, decayed once per block begun, exactly as :func:`calibrate` rolls it
    (so it need not be stored for keys that are still warming up)."""
    rolls = (np.maximum(count, 0).astype(np.int64) + params.block - 1) // params.block
    levels = [PRIOR]
    for _ in range(int(rolls.max(initial=0))):
        levels.append(levels[-1] * params.block_decay + 0.0)  # the kernel's own operations
    state = np.zeros((count.shape[0], 2, n_stats, N_BINS))
    state[:, 0] = np.array(levels)[rolls][:, None, :]
    return state


@dataclass
class Calibration:
    """Calibrated p-values of one chunk: per component (c, n) and combined (n,)."""

    evidence: np.ndarray
    p: np.ndarray


def calibrate(
    stats: np.ndarray,
    extra: np.ndarray,
    learn: np.ndarray,
    trusted: np.ndarray,
    segs: Segments,
    count: np.ndarray,
    state: np.ndarray,
    episodes: np.ndarray,
    params: CalibrationParams,
    active: np.ndarray | None = None,
) -> Calibration:
    """Calibrate the components ``stats`` (c, n), combine them with the p-values ``extra``
    (n,) and calibrate the combination (see the module docstring and
    :func:`sluice.models.detectors.evidence.combine`).

    ``learn`` (n,): events that enter the histograms; ``trusted`` (n,): events of keys old
    enough that their anomalies are kept out of them. ``active`` (m,): the segments to
    calibrate (default all); the events of the others get ``p`` = 1 (their keys are too
    young for a p-value to be used, and learn nothing). ``state`` (k, 2, c + 1, bins) holds
    the reference and pending histograms of each active segment before the chunk, and after
    it on return; ``episodes`` (m, 1 + 2 (c + 1)) likewise each key's episode counts (see
    :func:`fresh_episodes` and the module docstring).
    """
    n, n_comp = stats.shape[1], stats.shape[0]
    if active is None:
        active = np.ones(segs.m, dtype=bool)
    lengths = segs.lengths[active]
    bounds = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    # the kernel reads each key's events one after the other: lay them out so
    every = segs.single and bool(active.all())  # one event per key, all calibrated: in place
    if every:
        grouped = segs.seg
    else:
        events = np.flatnonzero(active[segs.seg])
        rank = np.cumsum(active) - 1  # index of each active segment among them
        grouped = np.empty(events.shape[0], dtype=np.int64)
        grouped[bounds[rank[segs.seg[events]]] + segs.offset[events]] = events
    evidence, p = np.empty((grouped.shape[0], n_comp)), np.empty(grouped.shape[0])
    chosen = np.ascontiguousarray(episodes if every else episodes[active])
    _kernel()(
        np.ascontiguousarray(stats.T if every else stats[:, grouped].T),
        (extra if every else extra[grouped]).astype(np.float64),
        (learn if every else learn[grouped]).astype(np.bool_),
        (trusted if every else trusted[grouped]).astype(np.bool_),
        bounds,
        count[active].astype(np.int64),
        state,
        chosen,
        params.block,
        np.array(
            [
                params.block_decay,
                Q_TAIL,
                LAM_MIN,
                EXCLUDE,
                ATOM,
                P_FLOOR,
                1.0 - 1.0 / max(params.horizon, 2),
                EPISODE_GAP,
                RECURRING_Z,
            ]
        ),
        EDGES,
        WIDTHS,
        MIDS,
        evidence,
        p,
    )
    episodes[active] = chosen
    if every:
        return Calibration(np.ascontiguousarray(evidence.T), p)
    out_evidence, out_p = np.ones(stats.shape), np.ones(n)
    out_evidence[:, grouped] = evidence.T
    out_p[grouped] = p
    return Calibration(out_evidence, out_p)


P_FLOOR = 1e-300


def _kernel() -> Any:
    """The compiled kernel (numba is imported, and the kernel compiled, on first use)."""
    from sluice.models.detectors import kernels

    return kernels.compiled()
