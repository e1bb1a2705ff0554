"""Reasons in words for flagged rows: which feature deviated, and how."""

from __future__ import annotations

from typing import Any

import numpy as np

# detector order as in evidence.COMPONENTS: level, trend, spread, rate, stuck, season,
# structure, drift


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
    if det == 6:
        return f"{feat} {a:.1f} sigma off its usual relation to {info['other']}"
    way = "upwards" if z > 0 else "downwards"
    return f"{feat} drifting {way} ({a:.1f} sigma gap between its recent and slow levels)"


def explain(batch: Any, config: Any, out: np.ndarray) -> None:
    """Reasons of a key-grouped chunk into ``out`` (by batch row): for alerted rows the
    component with the strongest calibrated evidence and its most deviating feature, for
    rows of keys still calibrating that they would have alerted, and missing features."""
    X = batch.X  # (p, n)
    missing = ~np.isfinite(X)
    rows = np.flatnonzero(batch.alert | batch.young | missing.any(axis=0))
    if rows.size == 0:
        return
    features = list(config.features)
    entity = _entity(config.key)
    fr = batch.features
    z = np.concatenate(
        [
            fr.z[:, :, rows],
            batch.season.z[None][:, :, rows],
            batch.structure[None][:, :, rows],
            batch.drift[None][:, :, rows],
        ]
    )
    evidence = batch.evidence[:, rows]
    if evidence.shape[0] < z.shape[0]:  # one feature: no structure component
        evidence = np.insert(evidence, 6, 1.0, axis=0)
    k = np.arange(rows.size)
    det = np.argmin(evidence, axis=0)
    feat = np.argmax(np.abs(z[det, :, k]), axis=1)
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
    young = batch.young[rows].tolist()
    ages = batch.age[rows].tolist()
    needed = config.warmup + config.calibration_events
    target = batch.segs.order[rows].tolist()
    for j, (r, f) in enumerate(zip(rows.tolist(), feat.tolist(), strict=True)):
        parts = []
        if flagged[j] or young[j]:
            one = {name: values[j] for name, values in info.items()}
            one["other"] = features[int(one["other"])]
            phrase = _phrase(int(det[j]), features[f], one["z"], one, entity)
            if young[j]:
                phrase = (
                    f"not alerted, {entity.removeprefix('this ')} history is still calibrating "
                    f"({int(ages[j])} of {needed} events): {phrase}"
                )
            parts.append(phrase)
        parts.extend(f"missing {features[g]}" for g in np.flatnonzero(missing[:, r]).tolist())
        out[target[j]] = "; ".join(parts)
