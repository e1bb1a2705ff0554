"""Drift detection on model inputs and scores: windowed PSI and KS, plus Page-Hinkley.

The first ``reference`` rows fix quantile bins and a reference histogram per watched
column; every further ``window`` rows are compared with it (population stability index
and the Kolmogorov-Smirnov distance of the binned distributions). Page-Hinkley watches each
column's mean online, row by row, vectorised with cumulative sums. A detection becomes a
drift event (metadata table) and, with ``on_drift: alert``, a ``<model>_drift`` column that
actions can use.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Engine,
    Float,
    Integer,
    String,
    Table,
    delete,
    insert,
    select,
)

from sluice.config.models import DriftSpec
from sluice.storage.db import METADATA, ensure_tables

N_BINS = 10
PH_DELTA, PH_LAMBDA = 0.1, 50.0

drift_events = Table(
    "drift_events",
    METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("pipeline", String(200), nullable=False, index=True),
    Column("model", String(100), nullable=False),
    Column("feature", String(200), nullable=False),
    Column("detector", String(40), nullable=False),
    Column("value", Float, nullable=False),
    Column("threshold", Float, nullable=False),
    Column("action", String(20), nullable=False),
    Column("epoch", Integer, nullable=False),
    Column("detected_at", DateTime(timezone=True), nullable=False),
)


@dataclass
class DriftEvent:
    """One detection."""

    feature: str
    detector: str
    value: float
    threshold: float


def psi(reference: np.ndarray, current: np.ndarray) -> float:
    """Population stability index of two histograms (counts)."""
    ref = np.clip(reference / max(reference.sum(), 1), 1e-4, None)
    cur = np.clip(current / max(current.sum(), 1), 1e-4, None)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def binned_ks(reference: np.ndarray, current: np.ndarray) -> float:
    """Kolmogorov-Smirnov distance between two binned distributions."""
    ref = np.cumsum(reference) / max(reference.sum(), 1)
    cur = np.cumsum(current) / max(current.sum(), 1)
    return float(np.max(np.abs(ref - cur)))


class DriftMonitor:
    """Per-column reference histograms, window histograms and Page-Hinkley state."""

    def __init__(self, spec: DriftSpec, columns: list[str]) -> None:
        self.spec = spec
        self.columns = columns
        k = len(columns)
        self.reference_rows: list[np.ndarray] = []
        self.edges: np.ndarray | None = None  # (k, N_BINS - 1)
        self.reference = np.zeros((k, N_BINS))
        self.window = np.zeros((k, N_BINS))
        self.window_rows = 0
        self.ph = np.zeros((k, 7))  # n, mean, up, min up, down, max down, scale

    def update(self, X: np.ndarray) -> list[DriftEvent]:
        """Fold a batch of rows (n, k) in; return detections."""
        X = X[np.isfinite(X).all(axis=1)]
        if X.shape[0] == 0:
            return []
        if self.edges is None:
            return self._collect_reference(X)
        events = self._page_hinkley(X)
        start = 0
        while start < X.shape[0]:
            take = min(self.spec.window - self.window_rows, X.shape[0] - start)
            self.window += self._histogram(X[start : start + take])
            self.window_rows += take
            start += take
            if self.window_rows >= self.spec.window:
                events += self._compare()
        return events

    def _collect_reference(self, X: np.ndarray) -> list[DriftEvent]:
        self.reference_rows.append(X)
        rows = np.vstack(self.reference_rows)
        if rows.shape[0] >= self.spec.reference:
            ref = rows[: self.spec.reference]
            qs = np.linspace(0, 1, N_BINS + 1)[1:-1]
            self.edges = np.quantile(ref, qs, axis=0).T
            self.reference = self._histogram(ref)
            scale = np.maximum(ref.std(axis=0), 1e-9)
            self.ph = np.zeros((len(self.columns), 7))
            self.ph[:, 0], self.ph[:, 1], self.ph[:, 6] = len(ref), ref.mean(axis=0) / scale, scale
            self.reference_rows = []
            rest = rows[self.spec.reference :]
            return self.update(rest) if rest.shape[0] else []
        return []

    def _histogram(self, X: np.ndarray) -> np.ndarray:
        assert self.edges is not None
        out = np.zeros((X.shape[1], N_BINS))
        for j in range(X.shape[1]):
            out[j] = np.bincount(
                np.searchsorted(self.edges[j], X[:, j], side="right"), minlength=N_BINS
            )[:N_BINS]
        return out

    def _compare(self) -> list[DriftEvent]:
        events = []
        for j, name in enumerate(self.columns):
            value = psi(self.reference[j], self.window[j])
            if value > self.spec.psi_threshold:
                events.append(DriftEvent(name, "psi", value, self.spec.psi_threshold))
            ks = binned_ks(self.reference[j], self.window[j])
            if ks > self.spec.ks_threshold and value <= self.spec.psi_threshold:
                events.append(DriftEvent(name, "ks", ks, self.spec.ks_threshold))
        self.window[:] = 0
        self.window_rows = 0
        return events

    def _page_hinkley(self, X: np.ndarray) -> list[DriftEvent]:
        """Two-sided Page-Hinkley on values standardised by the reference, per column."""
        events = []
        for j, name in enumerate(self.columns):
            n0, mean0, up0, up_min0, down0, down_max0, scale = self.ph[j]
            z = X[:, j] / scale
            n = n0 + np.arange(1, len(z) + 1)
            means = (mean0 * n0 + np.cumsum(z)) / n
            up = up0 + np.cumsum(z - means - PH_DELTA)
            down = down0 + np.cumsum(z - means + PH_DELTA)
            up_gap = up - np.minimum.accumulate(np.minimum(up, up_min0))
            down_gap = np.maximum.accumulate(np.maximum(down, down_max0)) - down
            gap = float(max(up_gap.max(), down_gap.max()))
            if gap > PH_LAMBDA:
                events.append(DriftEvent(name, "page_hinkley", gap, PH_LAMBDA))
                self.ph[j] = [0, 0.0, 0.0, 0.0, 0.0, 0.0, scale]
            else:
                self.ph[j] = [
                    n[-1],
                    means[-1],
                    up[-1],
                    min(up_min0, up.min()),
                    down[-1],
                    max(down_max0, down.max()),
                    scale,
                ]
        return events

    def state(self) -> bytes:
        """Serialise histograms and online state."""
        buf = io.BytesIO()
        pending = np.vstack(self.reference_rows) if self.reference_rows else np.empty((0, 0))
        np.savez(
            buf,
            edges=self.edges if self.edges is not None else np.empty((0, 0)),
            reference=self.reference,
            window=self.window,
            ph=self.ph,
            pending=pending,
            window_rows=np.array([self.window_rows]),
            columns=np.array(self.columns),
        )
        return buf.getvalue()

    def restore(self, blob: bytes) -> None:
        """Restore from ``state()``."""
        data = np.load(io.BytesIO(blob))
        self.columns = [str(c) for c in data["columns"]]
        self.edges = data["edges"] if data["edges"].size else None
        self.reference, self.window, self.ph = data["reference"], data["window"], data["ph"]
        self.window_rows = int(data["window_rows"][0])
        self.reference_rows = [data["pending"]] if data["pending"].size else []


def drift_writer(
    pipeline: str, model: str, epoch: int, action: str, events: list[DriftEvent]
) -> Callable[[Connection], None]:
    """A writer storing ``events`` as the drift of ``model`` in ``epoch``, idempotently.

    ``(pipeline, model, epoch)`` is the key: the writer replaces what an earlier attempt at
    the same epoch stored, so a replayed epoch does not record its drift twice. The runner
    runs it inside the epoch's checkpoint transaction.
    """
    now = datetime.now(UTC)
    rows = [
        {
            "pipeline": pipeline,
            "model": model,
            "feature": e.feature,
            "detector": e.detector,
            "value": e.value,
            "threshold": e.threshold,
            "action": action,
            "epoch": epoch,
            "detected_at": now,
        }
        for e in events
    ]

    def write(conn: Connection) -> None:
        conn.execute(
            delete(drift_events).where(
                drift_events.c.pipeline == pipeline,
                drift_events.c.model == model,
                drift_events.c.epoch == epoch,
            )
        )
        if rows:
            conn.execute(insert(drift_events), rows)

    return write


class DriftLog:
    """Records drift events in the metadata DB."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        ensure_tables(engine, "drift_events")

    def record(
        self, pipeline: str, model: str, epoch: int, action: str, events: list[DriftEvent]
    ) -> None:
        """Insert ``events`` in a transaction of their own."""
        if events:
            with self.engine.begin() as conn:
                drift_writer(pipeline, model, epoch, action, events)(conn)

    def recent(self, limit: int = 50) -> pa.Table:
        """The latest drift events."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(drift_events).order_by(drift_events.c.id.desc()).limit(limit)
            ).all()
        return pa.Table.from_pylist([dict(r._mapping) for r in rows])


class DriftWatch:
    """Drift monitoring of one model inside a pipeline (inputs and the model's score)."""

    def __init__(self, model: str, spec: DriftSpec, features: list[str]) -> None:
        self.model, self.spec = model, spec
        self.inputs = list(spec.features or features)
        self.monitor: DriftMonitor | None = None

    def observe(self, table: pa.Table) -> tuple[pa.Table, list[DriftEvent]]:
        """Update the monitor with ``table``; add ``<model>_drift`` when reacting by alert."""
        from sluice.models.online import feature_matrix

        columns = [
            c
            for c in [*self.inputs, f"{self.model}_score", f"{self.model}_proba"]
            if c in table.column_names
        ]
        if self.monitor is None:
            self.monitor = DriftMonitor(self.spec, columns)
        events = (
            self.monitor.update(feature_matrix(table, self.monitor.columns))
            if table.num_rows
            else []
        )
        if self.spec.on_drift == "alert":
            flag = pa.array(np.full(table.num_rows, bool(events)), pa.bool_())
            table = table.append_column(f"{self.model}_drift", flag)
        return table, events

    def state(self) -> bytes | None:
        """The monitor's state (None before the first batch)."""
        return self.monitor.state() if self.monitor else None

    def restore(self, blob: bytes) -> None:
        """Restore the monitor (its columns come from the blob)."""
        self.monitor = DriftMonitor(self.spec, [])
        self.monitor.restore(blob)
