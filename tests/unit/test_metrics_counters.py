"""Prometheus: process-wide counters of the work done, in the API's /metrics, and the shipped
alert rules and Grafana dashboard name only metrics Sluice exports.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import yaml

from sluice.api.metrics import ApiMetrics
from sluice.core import metrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _value(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_epochs_alerts_and_incidents_are_counted_and_exported() -> None:
    api = ApiMetrics(lambda: [])
    before = api.render().decode()
    metrics.record_epoch("unit_pipe#topic/3", 100, 90, 4, 6)
    flagged = pa.table(
        {
            "unit_model_anomaly": [True, True, False, None, True],
            "unit_model_onset": [0.9, 0.0, 0.0, None, 0.7],
        }
    )
    metrics.count_alerts("unit_model", flagged)
    metrics.count_alerts("absent_model", flagged)  # no such columns: nothing counted
    after = api.render().decode()
    for name, labels, grown in (
        ("sluice_events_in_total", {"pipeline": "unit_pipe"}, 100),
        ("sluice_events_out_total", {"pipeline": "unit_pipe"}, 90),
        ("sluice_dead_letters_total", {"pipeline": "unit_pipe"}, 4),
        ("sluice_events_filtered_total", {"pipeline": "unit_pipe"}, 6),
        ("sluice_anomalies_total", {"model": "unit_model"}, 3),
        ("sluice_incidents_total", {"model": "unit_model"}, 2),
        ("sluice_epoch_events_count", {"pipeline": "unit_pipe"}, 1),
    ):
        assert _value(after, name, **labels) - _value(before, name, **labels) == grown, name
    assert 'model="absent_model"' not in after


def _exported_names() -> set[str]:
    text = ApiMetrics(lambda: [{"name": "p", "state": "running"}]).render().decode()
    names = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    return {re.sub(r"_total$", "", n) for n in names}


def _referenced(expr: str) -> set[str]:
    names = set(re.findall(r"\bsluice_[a-z_]+", expr))
    return {re.sub(r"_(total|bucket|count|sum)$", "", n) for n in names}


def test_alert_rules_and_dashboard_use_exported_metrics() -> None:
    exported = _exported_names()
    rules = yaml.safe_load((DEPLOY / "prometheus" / "sluice-alerts.yaml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    dashboard = json.loads((DEPLOY / "grafana" / "sluice-dashboard.json").read_text())
    exprs += [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) > 15
    for expr in exprs:
        missing = _referenced(expr) - exported
        assert not missing, f"{expr!r} names metrics Sluice does not export: {missing}"
    assert {"sluice_job_runs", "sluice_action_deliveries", "sluice_drift_events"} <= exported


def test_the_export_is_prometheus_clients_own() -> None:
    """Counters and histograms export exactly as prometheus_client's Counter and Histogram
    (``_created`` times aside), series in the order they were first used."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client import Counter as PromCounter
    from prometheus_client import Histogram as PromHistogram
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import Collector

    ours = (
        metrics.Counter("t_count", "A count", ["a", "b"]),
        metrics.Counter("t_idle", "Never counted", ["a"]),
        metrics.Histogram("t_hist", "A histogram", ["a"], buckets=(1, 2.5, 10)),
    )
    native = CollectorRegistry()
    theirs = (
        PromCounter("t_count", "A count", ["a", "b"], registry=native),
        PromCounter("t_idle", "Never counted", ["a"], registry=native),
        PromHistogram("t_hist", "A histogram", ["a"], registry=native, buckets=(1, 2.5, 10)),
    )
    for counter in (ours[0], theirs[0]):
        counter.labels("x", 1).inc(3)
        counter.labels("y", "z").inc()
        counter.labels("x", "1").inc(0.5)
    for hist in (ours[2], theirs[2]):
        for value in (0.5, 1, 2, 2.5, 7, 11, 1e9):
            hist.labels("p").observe(value)
        hist.labels("q").observe(3)

    class Ours(Collector):
        def collect(self) -> list[Metric]:
            return [family.export(True) for family in ours]

    exported = CollectorRegistry()
    exported.register(Ours())

    def text(registry: CollectorRegistry) -> str:
        return re.sub(r"(_created\{[^}]*\}) \S+", r"\1 T", generate_latest(registry).decode())

    assert text(exported) == text(native)
    assert "t_count_created" in text(native) and "t_hist_created" in text(native)
