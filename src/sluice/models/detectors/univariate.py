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

from sluice.models.detectors.scan import Segments, ew_scan_stacked, last_valid, run_length

DETECTORS = ("level", "trend", "spread", "rate", "stuck")
LEVEL, TREND, SPREAD, RATE, STUCK = range(len(DETECTORS))  # rows of FeatureResult.z
# Per-key, per-feature state (float64 each). Sums are exponentially weighted and taken
# relative to ``ref`` (which follows the robust mean, see recenter) to stay well conditioned.
FEATURE_DOCS = {
    "ref": "reference level the level sums are taken from",
    "w": "EW weight of the valid values (long horizon)",
    "a1": "EW sum of the values (first, plain pass)",
    "b1": "EW sum of their squares (first pass)",
    "a2": "EW sum of the values winsorised at the first pass's bounds (robust mean)",
    "b2": "EW sum of their squares (robust variance)",
    "wd": "EW weight of the valid first differences",
    "d1": "EW sum of squared differences (first pass)",
    "d2": "EW sum of squared winsorised differences (robust scale of the rate)",
    "z0": "EW count of exact repeats (the learned rate of repeats, for stuck)",
    "ws": "EW weight of the recent deviations (short horizon)",
    "es": "EW sum of the recent deviations in sigma (trend)",
    "vs": "EW sum of their squares (spread)",
    "prev": "last valid value (for differences and repeats)",
    "run": "current run of repeated values",
    "wm": "EW weight of the deviations (medium horizon)",
    "em": "EW sum of the clipped deviations (medium horizon: the bias trend ignores)",
}
FEATURE_STATE = tuple(FEATURE_DOCS)
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
    sd: np.ndarray  # EW sd before each event (p, n)
    short_mean: np.ndarray  # short-horizon mean deviation in sigma, this event included (p, n)
    state: dict[str, np.ndarray]  # final state per segment, each (p, m) (when learning)
    valid: np.ndarray  # finite values (p, n)
    centred: np.ndarray  # values minus their key's reference level, 0 where not valid (p, n)


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


def level_basis(
    w: np.ndarray,
    a2: np.ndarray,
    b2: np.ndarray,
    d2: np.ndarray,
    wd: np.ndarray,
    z0: np.ndarray,
    ref: np.ndarray,
) -> dict[str, np.ndarray]:
    """What the level, rate and stuck statistics take from the long-horizon state before an
    event: the robust mean and sd of the level, the sd of the differences and the log of
    the learned rate of repeats."""
    mu, var = _moments(a2, b2, w)
    floor = _scale_floor(mu, ref)
    var += floor
    p0 = (z0 + 0.1) / (wd + 1.0)
    return {
        "mu": mu,
        "sd": np.sqrt(var),
        "dsd": np.sqrt(np.maximum(d2, 0.0) / np.maximum(wd, 1e-12) + floor),
        "log_p0": np.log(np.minimum(p0, 0.999)),
    }


def short_basis(
    ws: np.ndarray, es: np.ndarray, vs: np.ndarray, wm: np.ndarray, em: np.ndarray, hz: Horizons
) -> dict[str, np.ndarray]:
    """What trend and spread take from the short- and medium-horizon state before an event
    (the short sums decayed by one step, the medium-horizon bias)."""
    return {
        "ws": ws * hz.short,
        "es": es * hz.short,
        "vs": vs * hz.short,
        "bias": np.where(wm > 10.0, em / np.maximum(wm, 1e-12), 0.0),
    }


def feature_basis(st: dict[str, np.ndarray], hz: Horizons) -> dict[str, np.ndarray]:
    """Both bases for each key's stored state: the state before the key's next event."""
    return {
        **level_basis(*(st[k] for k in ("w", "a2", "b2", "d2", "wd", "z0", "ref"))),
        **short_basis(st["ws"], st["es"], st["vs"], st["wm"], st["em"], hz),
    }


def _zero_unless(values: np.ndarray, keep: np.ndarray) -> None:
    """``values = np.where(keep, values, 0.0)``, in place."""
    np.copyto(values, 0.0, where=~keep)


def feature_scores(
    X: np.ndarray,
    segs: Segments,
    st: dict[str, np.ndarray],
    hz: Horizons,
    basis: dict[str, np.ndarray] | None = None,
) -> FeatureResult:
    """All per-feature detector statistics for a key-sorted batch ``X`` (p, n).

    ``basis`` (see :func:`feature_basis`) is given for one event per key scored without
    learning: each event's state before it is then its key's state, so nothing is scanned and
    the result holds no final state.
    """
    m = np.isfinite(X)
    ref = st["ref"][..., segs.seg]
    c = np.where(m, X - ref, 0.0)
    out: dict[str, np.ndarray] = {}
    d, dm, rep = _differences(np.where(m, c, np.nan), m, segs, st["prev"] - st["ref"], out)
    run, out["run"] = run_length(rep, segs, st["run"])
    if basis is None:
        w, wd, level = _long_passes(c, m, d, dm, rep, ref, segs, st, hz, out)
    else:
        w, wd, level = st["w"], st["wd"], basis
    ready = m & (w > 2.0)
    z = np.empty((len(DETECTORS), *X.shape))  # one row per detector, each written in place
    e = np.divide(c - level["mu"], level["sd"], out=z[LEVEL])
    _zero_unless(e, ready)
    ec = np.minimum(np.maximum(e, -2 * CLIP), 2 * CLIP)
    short = _short_passes(ready, ec, segs, st, hz, out) if basis is None else basis
    # short-horizon stats include the current event (they summarise "the last few events")
    ws, es, vs = short["ws"] + ready, short["es"] + ec, short["vs"] + _spread_term(ec)
    full = ws > 3.0
    wss = np.maximum(ws, 1e-12)
    dof = np.minimum(np.maximum(ws, 0.0), hz.short_dof)
    mean = np.divide(es, wss, out=z[TREND])
    short_mean = np.where(full, mean, 0.0)
    mean -= short["bias"]
    mean *= np.sqrt(dof)
    _zero_unless(mean, full)
    ratio = np.where(full, vs / wss, 1.0)
    k = 2.0 / (9.0 * np.maximum(dof, 1.0))
    spread = np.cbrt(ratio)
    spread -= 1.0 - k
    _zero_unless(np.divide(spread, np.sqrt(k), out=z[SPREAD]), full)
    _zero_unless(np.divide(d, level["dsd"], out=z[RATE]), ready & (wd > 2.0))
    _zero_unless(np.sqrt(2.0 * np.maximum(-run * level["log_p0"], 0.0), out=z[STUCK]), m)
    if basis is None:
        out["prev"] = out["prev"] + st["ref"]
        out["ref"] = st["ref"]
    return FeatureResult(z, ratio, run, level["sd"], short_mean, out, m, c)


def _long_passes(
    c: np.ndarray,
    m: np.ndarray,
    d: np.ndarray,
    dm: np.ndarray,
    rep: np.ndarray,
    ref: np.ndarray,
    segs: Segments,
    st: dict[str, np.ndarray],
    hz: Horizons,
    out: dict[str, np.ndarray],
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """The long-horizon passes over the level and the differences: ``w`` and ``wd`` before
    each event and the level basis (final state into ``out``)."""
    # first EW pass of the level and of the differences
    rows = np.empty((6, *c.shape))
    mf = rows[0]
    np.copyto(mf, m)
    rows[1] = c
    np.square(c, out=rows[2])
    np.copyto(rows[3], dm)
    np.square(d, out=rows[4])
    np.copyto(rows[5], rep)
    names = ("w", "a1", "b1", "wd", "d1", "z0")
    w, a1, b1, wd, d1, z0 = _scan(rows, hz.long, segs, st, names, out)
    # second pass on values winsorised at the first pass's bounds
    mu1, var1 = _moments(a1, b1, w)
    rows = np.empty((3, *c.shape))
    np.multiply(_winsorised(c, mu1, var1, w, ref), mf, out=rows[0])
    np.square(rows[0], out=rows[1])
    # sums of squares; a contiguous scan's correction can leave them a rounding error below 0
    bound = CLIP * np.sqrt(np.maximum(d1, 0.0) / np.maximum(wd, 1e-12))
    np.square(np.where(wd > 2.0, np.clip(d, -bound, bound), d), out=rows[2])
    a2, b2, d2 = _scan(rows, hz.long, segs, st, ("a2", "b2", "d2"), out)
    return w, wd, level_basis(w, a2, b2, d2, wd, z0, ref)


def _spread_term(ec: np.ndarray) -> np.ndarray:
    """A deviation's share of the short-horizon variance: squared after clipping at
    :data:`CLIP` sigma, as the level's winsorisation, so that one spike (the level's and the
    rate's business) does not read as a wider spread for the events after it."""
    clipped = np.minimum(np.maximum(ec, -CLIP), CLIP)
    return np.square(clipped, out=clipped)


def _short_passes(
    ready: np.ndarray,
    ec: np.ndarray,
    segs: Segments,
    st: dict[str, np.ndarray],
    hz: Horizons,
    out: dict[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """Short-horizon sums of the deviations, and their medium-horizon mean (so a slowly
    varying lag, as a season's, is not a trend): the short basis (final state into ``out``)."""
    rows = np.empty((5, *ec.shape))
    np.copyto(rows[0], ready)
    rows[1] = ec
    rows[2] = _spread_term(ec)
    rows[3] = rows[0]
    clipped = np.minimum(np.maximum(ec, -BIAS_CLIP), BIAS_CLIP)
    np.multiply(clipped, rows[0], out=rows[4])
    decays = np.array([hz.short] * 3 + [hz.medium] * 2)
    ws, es, vs, wm, em = _scan(rows, decays, segs, st, ("ws", "es", "vs", "wm", "em"), out)
    return short_basis(ws, es, vs, wm, em, hz)


def _scan(
    rows: np.ndarray,
    decay: float | np.ndarray,
    segs: Segments,
    st: dict[str, np.ndarray],
    names: tuple[str, ...],
    out: dict[str, np.ndarray],
) -> np.ndarray:
    """:func:`ew_scan_stacked` of rows (r, p, n) from the states ``names``: the state before
    each event (r, p, n); the final states go into ``out``."""
    before, final = ew_scan_stacked(rows, decay, segs, np.array([st[k] for k in names]))
    out.update(zip(names, final, strict=True))
    return before


def recenter(state: dict[str, np.ndarray]) -> None:
    """Move each slot's reference to its current robust mean (keeps sums well conditioned)."""
    w = np.maximum(state["w"], 1e-12)
    delta = np.where(state["w"] > 0, state["a2"] / w, 0.0)
    for a, b in (("a1", "b1"), ("a2", "b2")):
        state[b] = state[b] - 2.0 * delta * state[a] + state["w"] * delta * delta
        state[a] = state[a] - state["w"] * delta
    state["ref"] = state["ref"] + delta
