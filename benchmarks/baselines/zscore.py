"""Per-key rolling z-score shared by the baselines (they have no built-in anomaly detector).

Exponentially weighted mean and variance per feature over about ``HORIZON`` events; an event
is scored from the state before it, then learned. The score is the largest |z| over the
features and an event is flagged above ``THRESHOLD`` once ``WARMUP`` events were seen. This
is far less work than Sluice's ``online_anomaly`` (several detectors, calibration, reasons).
"""

from __future__ import annotations

import math

HORIZON = 300
WARMUP = 30
THRESHOLD = 4.0
ALPHA = 1.0 / HORIZON


def fresh(features: int) -> list[float]:
    """State of a key not seen yet: count, then (mean, variance) per feature."""
    return [0.0] + [0.0, 0.0] * features


def score_learn(state: list[float], values: list[float]) -> float:
    """The largest |z| of ``values`` against ``state``, which is then updated in place."""
    count = state[0]
    best = 0.0
    for i, x in enumerate(values):
        mean, var = state[1 + 2 * i], state[2 + 2 * i]
        if count >= WARMUP and var > 0.0:
            best = max(best, abs(x - mean) / math.sqrt(var))
        if count == 0:
            state[1 + 2 * i] = x
            continue
        delta = x - mean
        state[1 + 2 * i] = mean + ALPHA * delta
        state[2 + 2 * i] = (1.0 - ALPHA) * (var + ALPHA * delta * delta)
    state[0] = count + 1
    return best
