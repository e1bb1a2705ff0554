"""Process-wide Prometheus counters: the work this process did (pipelines, models, actions, jobs).

Counters live in one registry per process, as Prometheus expects; the API's ``/metrics``
exports them beside its own request metrics, so what ``sluice demo`` or ``sluice serve``
did shows in the process that did it. Names follow the convention: a counter is exported
as ``<name>_total``.

The counts are kept here in plain Python: prometheus_client (with the HTTP and TLS modules it
imports) is loaded only by ``collect``, which yields the families its own ``Counter`` and
``Histogram`` would, so a ``sluice run`` that exports nothing does not import it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import pyarrow as pa
import pyarrow.compute as pc

from sluice.core.arrays import scalar

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

S = TypeVar("S", "_CounterSeries", "_HistogramSeries")


class _CounterSeries:
    """One labelled series of a counter."""

    __slots__ = ("_lock", "created", "value")

    def __init__(self, _family: Counter) -> None:
        self._lock = threading.Lock()
        self.created = time.time()
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        """Add ``amount`` (not negative)."""
        if amount < 0:
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        with self._lock:
            self.value += amount


class _HistogramSeries:
    """One labelled series of a histogram: the count per bucket and the sum."""

    __slots__ = ("_bounds", "_lock", "counts", "created", "sum")

    def __init__(self, family: Histogram) -> None:
        self._lock = threading.Lock()
        self._bounds = family.bounds
        self.created = time.time()
        self.counts = [0.0] * len(family.bounds)
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        """Count ``amount`` in the first bucket whose bound is at least it."""
        with self._lock:
            self.sum += amount
            for i, bound in enumerate(self._bounds):
                if amount <= bound:
                    self.counts[i] += 1
                    break


class _Family(Generic[S]):
    """A metric with labels: one series per distinct label values (``labels(...)``)."""

    series_type: type[S]

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.series: dict[tuple[str, ...], S] = {}
        self._lock = threading.Lock()

    def labels(self, *values: object) -> S:
        """The series of these label values (made on first use)."""
        if len(values) != len(self.labelnames):
            raise ValueError("Incorrect label count")
        key = tuple(str(v) for v in values)
        series = self.series.get(key)
        if series is None:
            with self._lock:
                series = self.series.get(key)
                if series is None:
                    series = self.series[key] = self.series_type(self)  # type: ignore[arg-type]
        return series

    def export(self, created: bool) -> Metric:
        """The family as prometheus_client's metric of this type exports it."""
        raise NotImplementedError


class Counter(_Family[_CounterSeries]):
    """A counter (``labels(...).inc(n)``), exported as ``<name>_total``."""

    series_type = _CounterSeries

    def export(self, created: bool) -> Metric:
        """The family as prometheus_client's ``Counter`` exports it."""
        from prometheus_client.core import CounterMetricFamily

        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, series in list(self.series.items()):
            family.add_metric(values, series.value, series.created if created else None)
        return family


class Histogram(_Family[_HistogramSeries]):
    """A histogram (``labels(...).observe(x)``) with fixed bucket bounds (+Inf added)."""

    series_type = _HistogramSeries

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float]
    ) -> None:
        bounds = [float(b) for b in buckets]
        self.bounds = (*bounds, float("inf")) if bounds[-1] != float("inf") else tuple(bounds)
        super().__init__(name, documentation, labelnames)

    def export(self, created: bool) -> Metric:
        """The family as prometheus_client's ``Histogram`` exports it."""
        from prometheus_client.core import HistogramMetricFamily
        from prometheus_client.utils import floatToGoString

        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, series in list(self.series.items()):
            with series._lock:
                counts, total = list(series.counts), series.sum
            buckets, acc = [], 0.0
            for bound, count in zip(self.bounds, counts, strict=True):
                acc += count
                buckets.append((floatToGoString(bound), acc))
            family.add_metric(values, buckets, total)
            if created:
                labels = dict(zip(self.labelnames, values, strict=True))
                family.add_sample(f"{self.name}_created", labels, series.created)
        return family


def collect() -> Iterator[Metric]:
    """Every process-wide metric as a prometheus_client family (for a registry's collector)."""
    from prometheus_client import metrics

    created = getattr(metrics, "_use_created", True)  # PROMETHEUS_DISABLE_CREATED_SERIES
    for family in FAMILIES:
        yield family.export(created)


EVENTS_IN = Counter("sluice_events_in", "Events read by a pipeline", ["pipeline"])
EVENTS_OUT = Counter("sluice_events_out", "Events a pipeline wrote to its sinks", ["pipeline"])
DEAD_LETTERS = Counter("sluice_dead_letters", "Events a pipeline dead-lettered", ["pipeline"])
FILTERED = Counter("sluice_events_filtered", "Events a pipeline filtered out", ["pipeline"])
ANOMALIES = Counter("sluice_anomalies", "Events a model flagged as anomalous", ["model"])
INCIDENTS = Counter(
    "sluice_incidents", "Incidents a model opened (alerts with an onset)", ["model"]
)
DRIFT_EVENTS = Counter("sluice_drift_events", "Drift detections", ["pipeline", "model"])
ACTION_DELIVERIES = Counter(
    "sluice_action_deliveries",
    "Action delivery attempts by rule and outcome (delivered, retry, failed, dead)",
    ["rule", "outcome"],
)
JOB_RUNS = Counter("sluice_job_runs", "Finished job runs by job and state", ["job", "state"])
CHECKPOINT_SECONDS = Histogram(
    "sluice_checkpoint_seconds",
    "Checkpoint commit duration",
    ["pipeline"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
EPOCH_EVENTS = Histogram(
    "sluice_epoch_events",
    "Events read per epoch",
    ["pipeline"],
    buckets=(1, 10, 100, 1_000, 10_000, 50_000, 100_000, 500_000, 1_000_000),
)


FAMILIES: tuple[_Family[Any], ...] = (
    EVENTS_IN,
    EVENTS_OUT,
    DEAD_LETTERS,
    FILTERED,
    ANOMALIES,
    INCIDENTS,
    DRIFT_EVENTS,
    ACTION_DELIVERIES,
    JOB_RUNS,
    CHECKPOINT_SECONDS,
    EPOCH_EVENTS,
)


def pipeline_label(name: str) -> str:
    """The pipeline a partition task (``PIPELINE#TOPIC/PARTITION``) belongs to."""
    return name.partition("#")[0]


def record_epoch(
    pipeline: str, rows_in: int, rows_out: int, dead_lettered: int, filtered: int
) -> None:
    """Count one committed epoch of ``pipeline``."""
    name = pipeline_label(pipeline)
    EVENTS_IN.labels(name).inc(rows_in)
    EVENTS_OUT.labels(name).inc(rows_out)
    DEAD_LETTERS.labels(name).inc(dead_lettered)
    FILTERED.labels(name).inc(filtered)
    EPOCH_EVENTS.labels(name).observe(rows_in)


def count_alerts(model: str, table: pa.Table) -> None:
    """Count the rows ``model`` flagged in ``table`` and the incidents they opened."""
    flag = f"{model}_anomaly"
    if flag not in table.column_names or table.num_rows == 0:
        return
    # no Python values in these calls: pyarrow would import pandas to convert them; nulls
    # count as False (sum skips them, and Kleene's AND is null or false where one side is)
    flags = table.column(flag)
    flagged = pc.sum(pc.cast(flags, pa.int64())).as_py() or 0
    if flagged:
        ANOMALIES.labels(model).inc(flagged)
    onset = f"{model}_onset"
    if flagged and onset in table.column_names:
        started = pc.greater(table.column(onset), scalar(0, pa.int64()))
        opened = pc.and_kleene(flags, started)
        INCIDENTS.labels(model).inc(pc.sum(pc.cast(opened, pa.int64())).as_py() or 0)
