"""The cheap per-feature detectors of ``online_anomaly``, vectorised over a key-sorted batch.

Every detector turns an event into a signed, roughly standard-normal statistic computed only
from the state before the event:

* ``level``  - deviation from a robust exponentially weighted mean, in EW standard deviations
  (the mean/variance learn from values winsorised at the bounds of a first, plain EW pass);
* ``trend``  - short-horizon mean of those deviations, in standard errors (drifts, shifts);
* ``spread`` - short-horizon variance over long-horizon variance (Wilson-Hilferty z);
* ``rate``   - first difference over its robust EW scale (jumps, "rising faster than usual");
* ``stuck``  - run of identical values, as the z of ``p0 ** run`` where ``p0`` is the learned
  rate of repeats (so a naturally quantised signal needs a longer run).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sluice.models.detectors.scan import Segments, ew_scans, last_valid, run_length

DETECTORS = ("level", "trend", "spread", "rate", "stuck")
# per-slot, per-feature state (all float64; see FeatureState)
FEATURE_STATE = (
    "ref",
    "w",
    "a1",
    "b1",
    "a2",
    "b2",
    "wd",
    "d1",
    "d2",
    "z0",
    "ws",
    "es",
    "vs",
    "prev",
    "run",
    "wm",
    "em",
)
CLIP = 4.0
BIAS_CLIP = 3.0
MEDIUM_HORIZON = 50


@dataclass(frozen=True)
class Horizons:
    """Decay factors derived from the configured horizon."""

    long: float
    short: float
    medium: float = 1.0 - 1.0 / MEDIUM_HORIZON

    @classmethod
    def from_events(cls, horizon: int, short: int) -> Horizons:
        """Decays for a long horizon and a short horizon given in events."""
        return cls(1.0 - 1.0 / max(horizon, 2), 1.0 - 1.0 / max(short, 2))

    @property
    def short_dof(self) -> float:
        """Effective sample size of a short-horizon EW average."""
        a = 1.0 - self.short
        return (2.0 - a) / a


@dataclass
class FeatureResult:
    """Statistics per detector (5, p, n), plus values needed to explain a verdict."""

    z: np.ndarray
    ratio: np.ndarray  # spread ratio (p, n)
    run: np.ndarray  # stuck run length (p, n)
    mean: np.ndarray  # EW level before each event (p, n)
    sd: np.ndarray  # EW sd before each event (p, n)
    short_mean: np.ndarray  # short-horizon mean deviation in sigma, this event included (p, n)
    state: dict[str, np.ndarray]  # final state per segment, each (p, m)


def _moments(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ws = np.maximum(w, 1e-12)
    mean = a / ws
    return mean, np.maximum(b / ws - mean * mean, 0.0)


def _scale_floor(mean: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return 1e-9 + (1e-6 * np.abs(mean + ref)) ** 2


def _differences(
    x: np.ndarray, m: np.ndarray, segs: Segments, prev: np.ndarray, out: dict[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First difference to the previous valid value, whether it is valid, whether it is 0."""
    before, out["prev"] = last_valid(x, m, segs, prev)
    d = x - before
    dm = m & np.isfinite(d)
    d = np.where(dm, d, 0.0)
    return d, dm, dm & (d == 0.0)


def _winsorised(
    c: np.ndarray, mu: np.ndarray, var: np.ndarray, w: np.ndarray, ref: np.ndarray
) -> np.ndarray:
    bound = CLIP * np.sqrt(var + _scale_floor(mu, ref))
    return np.where(w > 2.0, np.clip(c, mu - bound, mu + bound), c)


def feature_scores(
    X: np.ndarray, segs: Segments, st: dict[str, np.ndarray], hz: Horizons, learn: bool = True
) -> FeatureResult:
    """All per-feature detector statistics for a key-sorted batch ``X`` (p, n); the final
    state may be incomplete unless ``learn``."""
    m = np.isfinite(X)
    ref = st["ref"][..., segs.seg]
    c = np.where(m, X - ref, 0.0)
    mf = m.astype(np.float64)
    out: dict[str, np.ndarray] = {}
    x = np.where(m, c, np.nan)
    d, dm, rep = _differences(x, m, segs, st["prev"] - st["ref"], out)
    out["prev"] = out["prev"] + st["ref"]
    # first EW pass of the level and of the differences (both long horizon)
    (w, a1, b1, wd, d1, z0), fin = ew_scans(
        [
            (
                [mf, c, c * c, dm.astype(np.float64), d * d, rep.astype(np.float64)],
                hz.long,
                [st[k] for k in ("w", "a1", "b1", "wd", "d1", "z0")],
            )
        ],
        segs,
    )
    out.update(zip(("w", "a1", "b1", "wd", "d1", "z0"), fin, strict=True))
    if segs.single and not learn:  # the second pass only feeds later events and the state
        a2, b2, d2 = st["a2"], st["b2"], st["d2"]
    else:
        # second pass on values winsorised at the first pass's bounds
        mu1, var1 = _moments(a1, b1, w)
        cc = _winsorised(c, mu1, var1, w, ref) * mf
        # sums of squares; a contiguous scan's correction can leave them a rounding error < 0
        bound = CLIP * np.sqrt(np.maximum(d1, 0.0) / np.maximum(wd, 1e-12))
        dc = np.where(wd > 2.0, np.clip(d, -bound, bound), d)
        (a2, b2, d2), fin = ew_scans(
            [([cc, cc * cc, dc * dc], hz.long, [st["a2"], st["b2"], st["d2"]])], segs
        )
        out.update(zip(("a2", "b2", "d2"), fin, strict=True))
    mu, var = _moments(a2, b2, w)
    var = var + _scale_floor(mu, ref)
    sd = np.sqrt(var)
    ready = m & (w > 2.0)
    e = np.where(ready, (c - mu) / sd, 0.0)
    ec = np.minimum(np.maximum(e, -2 * CLIP), 2 * CLIP)
    r = ready.astype(np.float64)
    # short-horizon stats include the current event (they summarise "the last few events");
    # against the medium-horizon mean deviation, so a slowly varying lag (season) is not a trend
    (ws, es, vs, wm, em), fin = ew_scans(
        [
            ([r, ec, ec * ec], hz.short, [st["ws"], st["es"], st["vs"]]),
            ([r, np.minimum(np.maximum(ec, -BIAS_CLIP), BIAS_CLIP) * r], hz.medium, [st["wm"], st["em"]]),
        ],
        segs,
    )
    out.update(zip(("ws", "es", "vs", "wm", "em"), fin, strict=True))
    ws, es, vs = ws * hz.short + ready, es * hz.short + ec, vs * hz.short + ec * ec
    wss = np.maximum(ws, 1e-12)
    dof = np.minimum(np.maximum(ws, 0.0), hz.short_dof)
    bias = np.where(wm > 10.0, em / np.maximum(wm, 1e-12), 0.0)
    trend = np.where(ws > 3.0, (es / wss - bias) * np.sqrt(dof), 0.0)
    ratio = np.where(ws > 3.0, vs / wss, 1.0)
    k = 2.0 / (9.0 * np.maximum(dof, 1.0))
    spread = np.where(ws > 3.0, (np.cbrt(ratio) - (1.0 - k)) / np.sqrt(k), 0.0)
    run, out["run"] = run_length(rep, segs, st["run"])
    p0 = (z0 + 0.1) / (wd + 1.0)
    stuck = np.sqrt(2.0 * np.maximum(-run * np.log(np.minimum(p0, 0.999)), 0.0))
    dsd = np.sqrt(np.maximum(d2, 0.0) / np.maximum(wd, 1e-12) + _scale_floor(mu, ref))
    rate = np.where(ready & (wd > 2.0), d / dsd, 0.0)
    z = np.stack([e, trend, spread, rate, np.where(m, stuck, 0.0)])
    out["ref"] = st["ref"]
    short_mean = np.where(ws > 3.0, es / wss, 0.0)
    return FeatureResult(z, ratio, run, mu + ref, sd, short_mean, out)


def recenter(state: dict[str, np.ndarray]) -> None:
    """Move each slot's reference to its current robust mean (keeps sums well conditioned)."""
    w = np.maximum(state["w"], 1e-12)
    delta = np.where(state["w"] > 0, state["a2"] / w, 0.0)
    for a, b in (("a1", "b1"), ("a2", "b2")):
        state[b] = state[b] - 2.0 * delta * state[a] + state["w"] * delta * delta
        state[a] = state[a] - state["w"] * delta
    state["ref"] = state["ref"] + delta
