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


def explain(batch: Any, config: Any, out: np.ndarray) -> None:
    """Reasons of a key-grouped chunk into ``out`` (by batch row): the strongest detector for
    alerted rows, and missing features."""
    X = batch.X  # (p, n)
    missing = ~np.isfinite(X)
    rows = np.flatnonzero(batch.alert | missing.any(axis=0))
    if rows.size == 0:
        return
    features = list(config.features)
    entity = _entity(config.key)
    fr = batch.features
    z = np.concatenate(
        [fr.z[:, :, rows], batch.season.z[None][:, :, rows], batch.structure[None][:, :, rows]]
    )
    d, p = z.shape[0], z.shape[1]
    sub = np.abs(z) * _PREFERENCE[:d, None, None]
    det, feat = np.divmod(np.argmax(sub.reshape(d * p, rows.size), axis=0), p)
    k = np.arange(rows.size)
    info = {
        "z": z[det, feat, k].tolist(),
        "ratio": fr.ratio[feat, rows].tolist(),
        "run": fr.run[feat, rows].tolist(),
        "value": X[feat, rows].tolist(),
        "other": batch.partner[feat, rows].tolist(),
        "period": batch.season.period[feat, rows].tolist(),
        "expected": batch.season.expected[feat, rows].tolist(),
    }
    flagged = batch.alert[rows].tolist()
    target = batch.segs.order[rows].tolist()
    for j, (r, f) in enumerate(zip(rows.tolist(), feat.tolist(), strict=True)):
        parts = []
        if flagged[j]:
            one = {name: values[j] for name, values in info.items()}
            one["other"] = features[int(one["other"])]
            parts.append(_phrase(int(det[j]), features[f], one["z"], one, entity))
        parts.extend(f"missing {features[g]}" for g in np.flatnonzero(missing[:, r]).tolist())
        out[target[j]] = "; ".join(parts)
