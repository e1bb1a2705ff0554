"""Generator-style check: seeded IoT telemetry with injected anomalies and a regime change.

Scoring rule (event level, documented here because F1 depends on it): an injected anomaly
(a spike, level shift, stuck run or drift) counts as *detected* when at least one alert falls
in its span or the ``TOLERANCE`` events after it; an alert is a *true positive* when it falls
in such a span, and a false positive otherwise. The global regime change is not an anomaly:
alerts in the ``horizon`` events after it are neither counted for nor against the detector,
but alerts later than that are false positives (the detector must have adapted by then).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sluice.models.online_anomaly import OnlineAnomalyConfig, OnlineAnomalyDetector

TOLERANCE = 10
HORIZON = 300


@dataclass
class Telemetry:
    """Interleaved events of all devices, with the injected anomaly spans per device."""

    keys: np.ndarray
    X: np.ndarray
    t: np.ndarray  # per-device event index
    spans: list[tuple[int, int, int, str]]  # (device, start, end, kind)
    regime_at: int


def make_telemetry(devices: int = 50, events: int = 1200, seed: int = 7) -> Telemetry:
    """Two noisy features per device with spikes, shifts, stuck runs, drifts and a regime change."""
    rng = np.random.default_rng(seed)
    regime_at = int(events * 0.6)
    base = rng.normal([20.0, 30.0], [3.0, 2.0], size=(devices, 2))
    noise = np.array([0.5, 0.3])
    t = np.arange(events)
    X = base[:, None, :] + rng.normal(size=(devices, events, 2)) * noise
    X += np.sin(2 * np.pi * t / 97)[None, :, None] * noise * 0.5
    X[:, regime_at:, :] += np.array([2.0, 1.0])
    spans: list[tuple[int, int, int, str]] = []
    for d in range(devices):
        # after the first 200 events: a key younger than that is still calibrating
        slots = rng.permutation(np.arange(250, events - 120, 110))[:5]
        for kind, at in zip(("spike", "spike", "shift", "stuck", "drift"), slots, strict=True):
            f = int(rng.integers(0, 2))
            sign = rng.choice([-1.0, 1.0])
            if kind == "spike":
                X[d, at, f] += sign * rng.uniform(6, 10) * noise[f]
                end = at
            elif kind == "shift":
                end = at + int(rng.integers(20, 50))
                X[d, at : end + 1, f] += sign * rng.uniform(5, 8) * noise[f]
            elif kind == "stuck":
                end = at + int(rng.integers(30, 60))
                X[d, at : end + 1, f] = X[d, at - 1, f]
            else:
                end = at + 99
                X[d, at : end + 1, f] += sign * np.linspace(0, 12, 100) * noise[f]
            spans.append((d, int(at), int(end), kind))
    order = np.argsort(np.tile(t, devices), kind="stable")
    keys = np.repeat(np.array([f"dev-{d:03d}" for d in range(devices)], dtype=object), events)
    return Telemetry(
        keys[order], X.reshape(-1, 2)[order], np.tile(t, devices)[order], spans, regime_at
    )


def event_f1(tele: Telemetry, alert: np.ndarray) -> dict[str, float]:
    """Precision, recall and F1 of alerts against the injected spans (see module docstring)."""
    dev = np.array([int(k[4:]) for k in tele.keys])
    hit = np.zeros(len(tele.spans), dtype=bool)
    covered = np.zeros(alert.shape, dtype=bool)
    for i, (d, a, b, _) in enumerate(tele.spans):
        inside = (dev == d) & (tele.t >= a) & (tele.t <= b + TOLERANCE)
        covered |= inside
        hit[i] = bool(np.any(alert & inside))
    grace = (tele.t >= tele.regime_at) & (tele.t < tele.regime_at + HORIZON) & ~covered
    tp = int(np.sum(alert & covered))
    fp = int(np.sum(alert & ~covered & ~grace))
    precision = tp / max(tp + fp, 1)
    recall = float(hit.mean())
    f1 = 2 * precision * recall / max(precision + recall, 1e-12)
    late = int(np.sum(alert & ~covered & (tele.t >= tele.regime_at + HORIZON)))
    return {"precision": precision, "recall": recall, "f1": f1, "late_fp": late}


def run_detector(tele: Telemetry, batch: int = 2_000) -> np.ndarray:
    """Stream the telemetry through a default detector in batches; return the alert flags."""
    det = OnlineAnomalyDetector(
        OnlineAnomalyConfig(features=["temp_c", "pressure"], key="device_id", horizon=HORIZON)
    )
    flags = [
        det.score_learn(tele.keys[i : i + batch], tele.X[i : i + batch]).anomaly
        for i in range(0, len(tele.keys), batch)
    ]
    return np.concatenate(flags)


def test_finds_injected_anomalies_with_label_free_threshold() -> None:
    tele = make_telemetry()
    metrics = event_f1(tele, run_detector(tele))
    assert metrics["precision"] >= 0.85, metrics
    # 0.68 and 0.81 today; incidents soon after the regime change must not be taken for it
    assert metrics["recall"] >= 0.66, metrics
    assert metrics["f1"] >= 0.78, metrics


def test_adapts_after_regime_change() -> None:
    tele = make_telemetry()
    metrics = event_f1(tele, run_detector(tele))
    assert metrics["late_fp"] <= 0.002 * len(tele.keys), metrics
