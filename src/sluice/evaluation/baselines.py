"""Baseline detectors scored on the same inputs as ``online_anomaly``, per key and causally.

* **Rolling z-score** — per key and feature, an exponentially weighted mean and variance over
  about ``HORIZON`` events (the definition of ``benchmarks/baselines/zscore.py``); an event is
  scored from the state before it, then learned; the score is the largest |z| over the
  features (0 for a key's first ``WARMUP`` events); an alert is a score above ``THRESHOLD``.
  Vectorised: per key, both recursions are linear filters.
* **River HalfSpaceTrees** behind a min-max scaler, one model per key, events scored then
  learned one at a time (River's API); alerts from River's ``QuantileFilter`` at the
  ``1 - target_alert_rate`` quantile of the scores seen so far. Needs ``river`` (the ``ml`` extra).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from sluice.core.errors import ModelError

HORIZON = 300
WARMUP = 30
THRESHOLD = 4.0
HST_QUANTILE = 0.99


@dataclass
class BaselineScores:
    """Per-event scores and alert flags of one baseline, in input order."""

    name: str
    score: np.ndarray
    anomaly: np.ndarray


def key_groups(keys: np.ndarray | None, n: int) -> Iterator[np.ndarray]:
    """Row indices of each key, each in input order (one group when there are no keys)."""
    if keys is None:
        yield np.arange(n)
        return
    codes = np.unique(np.asarray(keys), return_inverse=True)[1].ravel()
    order = np.argsort(codes, kind="stable")
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    yield from np.split(order, bounds)


def _ew_z(x: np.ndarray, alpha: float, warmup: int) -> np.ndarray:
    """|z| of each value against the EW mean and variance of the values before it."""
    from scipy.signal import lfilter

    n = x.shape[0]
    out = np.zeros(n)
    if n < 2:
        return out
    decay = 1.0 - alpha
    mean = np.empty(n)
    mean[0] = x[0]
    mean[1:] = lfilter([alpha], [1.0, -decay], x[1:], zi=[decay * x[0]])[0]
    delta = x[1:] - mean[:-1]
    var = np.zeros(n)
    var[1:] = lfilter([1.0], [1.0, -decay], decay * alpha * delta * delta)
    t = np.arange(1, n)
    ok = (t >= warmup) & (var[:-1] > 0.0)
    out[1:][ok] = np.abs(delta[ok]) / np.sqrt(var[:-1][ok])
    return out


def zscore(
    keys: np.ndarray | None,
    X: np.ndarray,
    *,
    horizon: int = HORIZON,
    warmup: int = WARMUP,
    threshold: float = THRESHOLD,
) -> BaselineScores:
    """The per-key rolling z-score of the rows of ``X`` (scored before learned)."""
    X = np.nan_to_num(np.asarray(X, dtype=np.float64).reshape(X.shape[0], -1))
    score = np.zeros(X.shape[0])
    for rows in key_groups(keys, X.shape[0]):
        for j in range(X.shape[1]):
            score[rows] = np.maximum(score[rows], _ew_z(X[rows, j], 1.0 / horizon, warmup))
    return BaselineScores("rolling z-score", score, score > threshold)


def river_hst(seed: int = 0, quantile: float | None = None) -> Any:
    """River HalfSpaceTrees behind a MinMaxScaler (inside a QuantileFilter with ``quantile``)."""
    try:
        from river import anomaly, compose, preprocessing
    except ImportError as exc:  # pragma: no cover - river is in the dev and ml extras
        raise ModelError("the River baseline needs river: pip install 'sluice[ml]'") from exc
    detector = compose.Pipeline(preprocessing.MinMaxScaler(), anomaly.HalfSpaceTrees(seed=seed))
    if quantile is None:
        return detector
    return anomaly.QuantileFilter(detector, q=quantile, protect_anomaly_detector=False)


def halfspace_trees(
    keys: np.ndarray | None, X: np.ndarray, *, seed: int = 0, quantile: float = HST_QUANTILE
) -> BaselineScores:
    """River HalfSpaceTrees per key: scores, and alerts above the running ``quantile``."""
    X = np.nan_to_num(np.asarray(X, dtype=np.float64).reshape(X.shape[0], -1))
    names = [f"f{i}" for i in range(X.shape[1])]
    score = np.zeros(X.shape[0])
    flags = np.zeros(X.shape[0], dtype=bool)
    for rows in key_groups(keys, X.shape[0]):
        model = river_hst(seed, quantile)
        for i, row in zip(rows.tolist(), X[rows].tolist(), strict=True):
            x = dict(zip(names, row, strict=True))
            s = model.score_one(x)
            score[i], flags[i] = s, model.classify(s)
            model.learn_one(x)
    return BaselineScores("River HalfSpaceTrees", score, flags)


def all_baselines(
    keys: np.ndarray | None, X: np.ndarray, *, river: bool = True
) -> list[BaselineScores]:
    """The rolling z-score and (with ``river``) HalfSpaceTrees on the same rows."""
    out = [zscore(keys, X)]
    if river:
        out.append(halfspace_trees(keys, X))
    return out
