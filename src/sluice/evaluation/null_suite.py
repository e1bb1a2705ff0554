"""Anomaly-free streams of common shapes: how often does each setting alert on them?

Nine kinds of normal data, each ``keys`` keys x ``per_key`` events with the keys interleaved at
random (seeded): i.i.d. normal, AR(1) with phi 0.8 and 0.95, a slow cycle plus correlated
noise, a stepped sensor (values rounded to 0.5), Student t with 3 degrees of freedom, Poisson
counts, a correlated pair (two features) and a random walk. Every kind runs through one
pipeline with two ``online_anomaly`` models: default settings (``det``) and
``target_alert_rate: 0.01`` (``det01``). The figures are the lake's ``<m>_anomaly`` rates in
each key's events 0-29, 30-199 and from event 200 on, and beside them the alert rates of
the per-key rolling z-score and River HalfSpaceTrees (1% quantile filter) on the same values.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from rich.console import Console

from sluice.evaluation.baselines import all_baselines
from sluice.evaluation.lake import DetectorSpec, run_table
from sluice.evaluation.report import Evaluation, FigureTable, pct

PHASES = {"0-29": (0, 30), "30-199": (30, 200), "200+": (200, None)}
MODELS = {"det": {}, "det01": {"target_alert_rate": 0.01}}
Generator = Callable[[np.random.Generator, int], np.ndarray]


def _ar1(rng: np.random.Generator, n: int, phi: float) -> np.ndarray:
    from scipy.signal import lfilter

    noise = rng.normal(size=n) * np.sqrt(1 - phi * phi)
    first = rng.normal()
    return lfilter([1.0], [1.0, -phi], noise, zi=[phi * first])[0]


def _cycle(rng: np.random.Generator, n: int) -> np.ndarray:
    period = rng.uniform(300, 900)
    phase = rng.uniform(0, 2 * np.pi)
    return 50 + 5 * np.sin(2 * np.pi * np.arange(n) / period + phase) + _ar1(rng, n, 0.9)


def _pair(rng: np.random.Generator, n: int) -> np.ndarray:
    a = rng.normal(size=n)
    return np.column_stack([10 + 2 * a, -5 + 0.9 * a + np.sqrt(1 - 0.81) * rng.normal(size=n)])


KINDS: dict[str, Generator] = {
    "iid_normal": lambda rng, n: 20 + 3 * rng.normal(size=n),
    "ar1_0.8": lambda rng, n: 100 + 4 * _ar1(rng, n, 0.8),
    "ar1_0.95": lambda rng, n: 100 + 4 * _ar1(rng, n, 0.95),
    "cycle_plus_noise": _cycle,
    "stepped_0.5": lambda rng, n: np.round((20 + _ar1(rng, n, 0.98)) * 2) / 2,
    "student_t3": lambda rng, n: 5 + rng.standard_t(3, size=n),
    "poisson_counts": lambda rng, n: rng.poisson(4.0, size=n).astype(np.float64),
    "correlated_pair": _pair,
    "random_walk": lambda rng, n: 100 + np.cumsum(rng.normal(size=n)),
}


@dataclass(frozen=True)
class NullSpec:
    """Size and seed of the anomaly-free suite."""

    keys: int = 20
    per_key: int = 3000
    seed: int = 5
    kinds: tuple[str, ...] = tuple(KINDS)


def null_stream(kind: str, spec: NullSpec) -> pa.Table:
    """One kind's events: ``key``, ``n`` (event number within the key), ``ts``, ``x`` [, ``y``]."""
    rng = np.random.default_rng([spec.seed, list(KINDS).index(kind)])
    values = [KINDS[kind](rng, spec.per_key).reshape(spec.per_key, -1) for _ in range(spec.keys)]
    key_of = rng.permutation(np.repeat(np.arange(spec.keys), spec.per_key))
    nth = np.empty(key_of.size, dtype=np.int64)
    for k in range(spec.keys):
        nth[key_of == k] = np.arange(spec.per_key)
    X = np.stack(values)[key_of, nth]
    start = np.datetime64("2026-01-01T00:00:00", "us")
    columns: dict[str, Any] = {
        "key": pa.array([f"{kind}-{k:02d}" for k in key_of], pa.string()),
        "n": pa.array(nth),
        "ts": pa.array(start + np.arange(key_of.size) * np.timedelta64(1, "s"), pa.timestamp("us")),
    }
    for c, name in enumerate(["x", "y"][: X.shape[1]]):
        columns[name] = pa.array(X[:, c], pa.float64())
    return pa.table(columns)


def phase_rates(nth: np.ndarray, flags: np.ndarray) -> dict[str, float]:
    """Alert rate of ``flags`` in each phase of a key's life (by event number ``nth``)."""
    out = {}
    for phase, (lo, hi) in PHASES.items():
        here = (nth >= lo) & (nth < (hi if hi is not None else np.iinfo(np.int64).max))
        out[phase] = float(np.mean(flags[here])) if here.any() else float("nan")
    return out


def _run_kind(
    kind: str, spec: NullSpec, river: bool, console: Console | None
) -> dict[str, dict[str, float]]:
    data = null_stream(kind, spec)
    features = [c for c in ("x", "y") if c in data.column_names]
    schema = {"key": "string", "n": "long", "ts": "timestamp", **dict.fromkeys(features, "double")}
    detectors = [DetectorSpec(features, "key", dict(opts), name) for name, opts in MODELS.items()]
    pipeline = f"null_{kind.replace('.', '_')}"
    run = run_table(pipeline, data, schema, detectors, event_time="ts", console=console)
    nth = run.column("n")
    out = {name: phase_rates(nth, run.output("anomaly", name)) for name in MODELS}
    X = np.column_stack([run.column(f) for f in features])
    for b in all_baselines(run.column("key"), X, river=river):
        out[b.name] = phase_rates(nth, b.anomaly)
    return out


def evaluate_null(
    spec: NullSpec = NullSpec(), *, river: bool = False, console: Console | None = None
) -> Evaluation:
    """Alert rates per kind and phase of both settings (and the baselines) on normal data."""
    started = time.perf_counter()
    rates = {kind: _run_kind(kind, spec, river, console) for kind in spec.kinds}
    worst = {
        name: {p: max(rates[k][name][p] for k in spec.kinds) for p in PHASES} for name in MODELS
    }
    detectors = list(next(iter(rates.values())))
    young = max(rates[k][name]["0-29"] for k in spec.kinds for name in MODELS)
    table = FigureTable(
        "Alert rate per kind in each key's events 30-199 and from event 200 on (online_anomaly "
        f"with defaults and with target 0.01; highest rate in events 0-29: {pct(young)})",
        ["kind", *(f"{_label(d)} {p}" for d in detectors for p in ("30-199", "200+"))],
        [
            [kind, *(pct(r[d][p]) for d in detectors for p in ("30-199", "200+"))]
            for kind, r in rates.items()
        ],
    )
    return Evaluation(
        "null",
        f"anomaly-free suite: {len(spec.kinds)} kinds x {spec.keys} keys x {spec.per_key:,} "
        f"events, keys interleaved, seed {spec.seed}",
        {"rates": rates, "worst": worst},
        [table],
        time.perf_counter() - started,
    )


def _label(name: str) -> str:
    return {
        "det": "defaults",
        "det01": "target 0.01",
        "rolling z-score": "z-score",
        "River HalfSpaceTrees": "River HST",
    }.get(name, name)
