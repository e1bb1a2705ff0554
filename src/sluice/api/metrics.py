"""Prometheus metrics of one app: its own registry, request counters and pipeline gauges."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from sluice.core import metrics as process_metrics

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _total_lag(lag: Any) -> float:
    if isinstance(lag, dict):
        return float(sum(v for v in lag.values() if isinstance(v, int | float)))
    return float(lag) if isinstance(lag, int | float) else 0.0


class _PipelineCollector(Collector):
    """Gauges read from the pipelines provider at scrape time."""

    def __init__(self, statuses: Callable[[], Iterable[Mapping[str, Any]]]) -> None:
        self.statuses = statuses

    def collect(self) -> Iterable[GaugeMetricFamily]:
        """Yield events/s, lag, errors and up per pipeline."""
        rate = GaugeMetricFamily(
            "sluice_pipeline_events_per_second", "Events processed per second", labels=["pipeline"]
        )
        lag = GaugeMetricFamily(
            "sluice_pipeline_lag", "Records waiting to be processed", labels=["pipeline"]
        )
        errors = GaugeMetricFamily(
            "sluice_pipeline_errors", "Errors since start", labels=["pipeline"]
        )
        up = GaugeMetricFamily(
            "sluice_pipeline_up", "1 when the pipeline is running", labels=["pipeline"]
        )
        for status in self.statuses():
            name = [str(status.get("name", "?"))]
            rate.add_metric(name, float(status.get("events_per_second") or 0.0))
            lag.add_metric(name, _total_lag(status.get("lag")))
            errors.add_metric(name, float(status.get("errors") or 0))
            up.add_metric(name, 1.0 if status.get("state") == "running" else 0.0)
        yield from (rate, lag, errors, up)


class _ProcessCollector(Collector):
    """The process-wide counters (pipelines, models, actions, jobs) in this app's export."""

    def collect(self) -> Iterable[Any]:
        """Yield every process-wide family (``core.metrics``)."""
        yield from process_metrics.collect()


class ApiMetrics:
    """Counters and histograms of one app, exported in Prometheus text format."""

    def __init__(self, statuses: Callable[[], Iterable[Mapping[str, Any]]]) -> None:
        self.registry = CollectorRegistry()
        self.ingest_requests = Counter(
            "sluice_ingest_requests",
            "Ingest requests by outcome",
            ["stream", "status"],
            registry=self.registry,
        )
        self.ingest_events = Counter(
            "sluice_ingest_events", "Events accepted by ingest", ["stream"], registry=self.registry
        )
        self.ingest_bytes = Counter(
            "sluice_ingest_bytes",
            "Body bytes accepted by ingest",
            ["stream"],
            registry=self.registry,
        )
        self.predict_seconds = Histogram(
            "sluice_predict_seconds",
            "Prediction latency",
            ["model"],
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0, 5.0),
        )
        self.registry.register(_PipelineCollector(statuses))
        self.registry.register(_ProcessCollector())

    def render(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)
