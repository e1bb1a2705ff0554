"""Turn the detectors' statistics into one score per event, as NAB's best detectors do.

1. *Raw surprise*: the largest detector statistic of the event, as ``-log10`` of its two-sided
   normal tail probability, Bonferroni-corrected for the number of statistics looked at.
2. *Anomaly likelihood* (after Numenta's HTM detector): the short-term average of the raw
   surprise compared with its long-term distribution for the same key, as a tail surprise;
   this adapts each key's scale, so a noisy key does not drown a quiet one.
3. *Novelty*: an event only keeps its full surprise when it exceeds the key's recent (decaying)
   maximum; the rest of an ongoing episode is damped, so one incident is one alert.
4. *Quiet period* (the published score only): after an alert-level event, the key's scores
   stay damped unless they beat that alert (its level decays over ``quiet_horizon`` events),
   as NAB's best detectors suppress repeats; ordinary fluctuations do not feed this maximum.
   Alerts start from the score before this stage, so a new incident is still flagged.
5. *Refractory period* (the published score only): for :data:`REFRACTORY` events after an
   onset-level score (:data:`ONSET_LEVEL`), the key's scores are damped unless they beat it by
   :data:`REFRACTORY_MARGIN`, so the rising edge of one incident ranks once.
6. *Lifetime discount* (the published score only, see :func:`lifetime_discount`): a key that
   has been watched for many events has shown many rare-looking events by chance (the
   look-elsewhere effect over its life), so its onsets are discounted slowly with its age.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import log_ndtr

from sluice.models.detectors.scan import (
    Segments,
    decayed_max,
    ew_scan,
    last_valid,
    run_length,
)

SCALE = 4.0
LN10 = float(np.log(10.0))
# "rq": refractory events left after the key's last onset, "rl": that onset's (undamped) score
POST_STATE = ("lw", "l1", "l2", "mx", "ax", "rq", "rl", "hist")
ONSET_LEVEL = 0.42  # published score that starts a refractory period
REFRACTORY = 5  # events
REFRACTORY_MARGIN = 1.25  # how much a later event must beat the onset to rank during it
# onsets of a key older than LIFETIME events are divided by 1 + LIFETIME_WEIGHT * ln(age / LIFETIME)
LIFETIME = 5000.0
LIFETIME_WEIGHT = 0.04
N_BINS = 13
EDGES = np.linspace(0.0, 6.0, N_BINS)  # bins of the compressed raw surprise


@dataclass(frozen=True)
class PostParams:
    """Constants of the post-processing (fixed defaults; not tuned per series)."""

    long_decay: float
    short_decay: float
    max_decay: float
    damping: float = 0.0
    raw_weight: float = 0.1
    like_weight: float = 0.0
    compress: bool = True
    sd_floor: float = 0.05
    margin: float = 1.0
    outlier_z: float = 3.0
    outlier_weight: float = 1.0
    extreme_weight: float = 0.05
    quiet_decay: float = 1.0 - 1.0 / 400


def surprise(z: np.ndarray, tests: int = 1) -> np.ndarray:
    """``-log10`` of the two-sided normal tail of ``|z|``, corrected for ``tests`` looks."""
    log_p = np.log(2.0) + log_ndtr(-np.abs(z)) + np.log(max(tests, 1))
    return np.maximum(-log_p / LN10, 0.0)


def strongest(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Largest ``|z|`` over (detector, feature) for each event, with its detector and feature."""
    d, p, n = z.shape
    flat = np.abs(z).reshape(d * p, n)
    best = np.argmax(flat, axis=0)
    value = flat[best, np.arange(n)]
    return value, best // p, best % p


def _likelihood_moments(
    lw: np.ndarray, l1: np.ndarray, l2: np.ndarray, params: PostParams
) -> tuple[np.ndarray, np.ndarray]:
    """Long-term mean and sd of a key's compressed raw surprise, from its EW sums."""
    mean = l1 / np.maximum(lw, 1e-12)
    sd = np.sqrt(np.maximum(l2 / np.maximum(lw, 1e-12) - mean * mean, 0.0)) + params.sd_floor
    return mean, sd


def _tail(hist: np.ndarray) -> np.ndarray:
    """``hist[b:].sum()`` for every bin ``b`` (bins, n), summed from the top bin down (a
    running sum row by row: a cumulative sum down the columns is several times slower)."""
    out = np.empty_like(hist)
    out[-1] = hist[-1]
    for b in range(hist.shape[0] - 2, -1, -1):
        np.add(out[b + 1], hist[b], out=out[b])
    return out


def post_basis(st: dict[str, np.ndarray], params: PostParams) -> dict[str, np.ndarray]:
    """What the post-processing takes from each key's stored state (the state before its
    next event): the moments of its raw surprise and the tail sums of their histogram."""
    mean, sd = _likelihood_moments(st["lw"], st["l1"], st["l2"], params)
    return {"rv_mean": mean, "rv_sd": sd, "rv_tail": _tail(st["hist"])}


def post_process(
    raw: np.ndarray,
    warm: np.ndarray,
    segs: Segments,
    params: PostParams,
    init: dict[str, np.ndarray],
    threshold: float,
    basis: dict[str, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Anomaly-likelihood and novelty stages: score and alerting score in [0, 1), final state.

    ``basis`` (see :func:`post_basis`) is given for one event per key scored without
    learning: nothing is scanned then, and the final state is incomplete.
    """
    rows = np.empty((3, raw.shape[0]))
    wf, rv = rows[0], rows[1]
    np.copyto(wf, warm)
    np.multiply(np.log1p(raw) if params.compress else raw, wf, out=rv)
    np.square(rv, out=rows[2])
    state: dict[str, np.ndarray] = {}
    if basis is None:
        names = ("lw", "l1", "l2")
        (lw, l1, l2), final = ew_scan(
            rows, params.long_decay, segs, np.stack([init[k] for k in names])
        )
        state.update(zip(names, final, strict=True))
        mean, sd = _likelihood_moments(lw, l1, l2, params)
    else:
        lw, mean, sd = init["lw"], basis["rv_mean"], basis["rv_sd"]
    ok = lw > 5.0
    z_inst = np.where(ok, (rv - mean) / sd, 0.0)
    # empirical rarity: EW share of this key's past events at least as surprising as this one
    b = np.searchsorted(EDGES, rv, side="right") - 1
    if basis is None:
        learn = wf * np.where(z_inst > params.outlier_z, params.outlier_weight, 1.0)
        onehot = (np.arange(N_BINS)[:, None] == b[None, :]) * learn
        hb, state["hist"] = ew_scan(onehot, params.long_decay, segs, init["hist"])
        tail = _tail(hb)
    else:
        tail = basis["rv_tail"]
    above = tail[np.maximum(b, 0), np.arange(b.shape[0])]
    rarity = -np.log10((above + 0.5) / (lw + 1.0))
    z = rarity + params.raw_weight * np.minimum(np.maximum(z_inst, 0.0), 10.0)
    z = np.where(ok, z + params.extreme_weight * np.minimum(raw, 40.0), 0.0)
    z = z * wf
    zpos = np.maximum(z, 0.0)
    mx_before, state["mx"] = decayed_max(zpos, params.max_decay, segs, init["mx"])
    keep = zpos > mx_before * params.margin
    z = np.where(keep, zpos, zpos * params.damping)
    alarm = z / (z + SCALE) >= threshold
    ax_before, state["ax"] = decayed_max(
        np.where(alarm, z, 0.0), params.quiet_decay, segs, init["ax"]
    )
    quiet = np.where(z > ax_before * params.margin, z, z * params.damping)
    quiet = _refractory(quiet, segs, init, state, params.damping)
    return quiet / (quiet + SCALE), z / (z + SCALE), state


def _refractory(
    z: np.ndarray,
    segs: Segments,
    init: dict[str, np.ndarray],
    state: dict[str, np.ndarray],
    damping: float,
) -> np.ndarray:
    """Damp events within :data:`REFRACTORY` events of an onset that do not beat it by
    :data:`REFRACTORY_MARGIN` (final ``rq`` and ``rl`` into ``state``)."""
    onset = z >= SCALE * ONSET_LEVEL / (1.0 - ONSET_LEVEL)
    # events since the last onset; a key never alerted counts as long past one
    since0 = REFRACTORY - init["rq"]
    since, since_end = run_length(~onset, segs, since0)
    level, state["rl"] = last_valid(z, onset, segs, init["rl"])
    damp = (segs.shift(since, since0) < REFRACTORY) & (z < level * REFRACTORY_MARGIN)
    state["rq"] = np.maximum(REFRACTORY - since_end, 0.0)
    return np.where(damp, z * damping, z)


def lifetime_discount(onset: np.ndarray, age: np.ndarray) -> np.ndarray:
    """Onset scores of events whose key had shown ``age`` events before them, discounted by
    the log of that age beyond :data:`LIFETIME` (see the module docstring)."""
    return onset / (1.0 + LIFETIME_WEIGHT * np.log(np.maximum(age / LIFETIME, 1.0)))
