"""Process-wide Prometheus counters: the work this process did (pipelines, models, actions, jobs).

Counters live in one registry per process, as Prometheus expects; the API's ``/metrics``
exports them beside its own request metrics, so what ``sluice demo`` or ``sluice serve``
did shows in the process that did it. Names follow the convention: a counter is exported
as ``<name>_total``.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
from prometheus_client import CollectorRegistry, Counter, Histogram

from sluice.core.arrays import scalar

REGISTRY = CollectorRegistry(auto_describe=True)

EVENTS_IN = Counter(
    "sluice_events_in", "Events read by a pipeline", ["pipeline"], registry=REGISTRY
)
EVENTS_OUT = Counter(
    "sluice_events_out", "Events a pipeline wrote to its sinks", ["pipeline"], registry=REGISTRY
)
DEAD_LETTERS = Counter(
    "sluice_dead_letters", "Events a pipeline dead-lettered", ["pipeline"], registry=REGISTRY
)
FILTERED = Counter(
    "sluice_events_filtered", "Events a pipeline filtered out", ["pipeline"], registry=REGISTRY
)
ANOMALIES = Counter(
    "sluice_anomalies", "Events a model flagged as anomalous", ["model"], registry=REGISTRY
)
INCIDENTS = Counter(
    "sluice_incidents",
    "Incidents a model opened (alerts with an onset)",
    ["model"],
    registry=REGISTRY,
)
DRIFT_EVENTS = Counter(
    "sluice_drift_events", "Drift detections", ["pipeline", "model"], registry=REGISTRY
)
ACTION_DELIVERIES = Counter(
    "sluice_action_deliveries",
    "Action delivery attempts by rule and outcome (delivered, retry, failed, dead)",
    ["rule", "outcome"],
    registry=REGISTRY,
)
JOB_RUNS = Counter(
    "sluice_job_runs", "Finished job runs by job and state", ["job", "state"], registry=REGISTRY
)
CHECKPOINT_SECONDS = Histogram(
    "sluice_checkpoint_seconds",
    "Checkpoint commit duration",
    ["pipeline"],
    registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
EPOCH_EVENTS = Histogram(
    "sluice_epoch_events",
    "Events read per epoch",
    ["pipeline"],
    registry=REGISTRY,
    buckets=(1, 10, 100, 1_000, 10_000, 50_000, 100_000, 500_000, 1_000_000),
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
