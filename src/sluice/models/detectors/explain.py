"""Reasons in words for flagged rows: which feature deviated, and how."""

from __future__ import annotations

from typing import Any

import numpy as np

# detector order: level, trend, spread, rate, stuck, season, structure
_PREFERENCE = np.array([1.0, 0.9, 0.8, 0.95, 1.0, 1.0, 0.8])


def _entity(key: str | None) -> str:
    if not key:
        return "its"
    name = key.lower()
    for suffix in ("_id", "id", "_key", "_name"):
        if name.endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
            break
    return f"this {name.strip('_')}'s"


def _phrase(det: int, feat: str, z: float, info: dict[str, Any], entity: str) -> str:
    a = abs(z)
    if det == 0:
        side = "above" if z > 0 else "below"
        return f"{feat} {a:.1f} sigma {side} {entity} recent level"
    if det == 1:
        way = "rising" if z > 0 else "falling"
        return f"{feat} {way} {a:.1f} sigma faster than usual"
    if det == 2:
        ratio = float(np.sqrt(max(info["ratio"], 0.0)))
        kind = "wider" if z > 0 else "narrower"
        return f"{feat} spread {ratio:.1f}x {kind} than usual"
    if det == 3:
        way = "up" if z > 0 else "down"
        return f"{feat} jumped {way} {a:.1f} sigma from the previous value"
    if det == 4:
        return f"{feat} stuck at {info['value']:.6g} for {int(info['run']) + 1} events"
    if det == 5:
        side = "above" if z > 0 else "below"
        return (
            f"{feat} {a:.1f} sigma {side} its usual level at this point of {entity} "
            f"{int(info['period'])}-event cycle (expected {info['expected']:.6g})"
        )
    return f"{feat} {a:.1f} sigma off its usual relation to {info['other']}"


def explain(
    z: np.ndarray, batch: Any, config: Any, flagged: np.ndarray, X: np.ndarray
) -> np.ndarray:
    """Reason per key-sorted row: the strongest detector for flagged rows, missing features."""
    n = X.shape[0]
    reason = np.full(n, "", dtype=object)
    missing = ~np.isfinite(X)
    rows = np.flatnonzero(flagged | missing.any(axis=1))
    if rows.size == 0:
        return reason
    features = list(config.features)
    entity = _entity(config.key)
    d, p = z.shape[0], z.shape[1]
    sub = np.abs(z[:, :, rows]) * _PREFERENCE[:d, None, None]
    best = np.argmax(sub.reshape(d * p, rows.size), axis=0)
    fr = batch.features
    for r, b in zip(rows.tolist(), best.tolist(), strict=True):
        parts = []
        if flagged[r]:
            det, f = divmod(b, p)
            info = {
                "ratio": fr.ratio[f, r],
                "run": fr.run[f, r],
                "value": X[r, f],
                "other": features[int(batch.partner[f, r])],
                "period": batch.period[f, r],
                "expected": batch.expected[f, r],
            }
            parts.append(_phrase(det, features[f], float(z[det, f, r]), info, entity))
        parts.extend(f"missing {features[f]}" for f in np.flatnonzero(missing[r]).tolist())
        reason[r] = "; ".join(parts)
    return reason
