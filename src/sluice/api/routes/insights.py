"""What the dashboard reads beyond the raw lists: throughput history, incidents, a key's
series, pipeline runs, drift events, action and dead-letter summaries.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from anyio import to_thread
from fastapi import APIRouter, Depends, Query, Request

from sluice.api.auth import read_access
from sluice.api.deps import AppState, get_state
from sluice.api.errors import ApiError, JSONOut
from sluice.api.lake import TableView, ident, literal, rows_of, table_views
from sluice.api.routes.data import respond
from sluice.api.routes.ops import dead_letter_counts

router = APIRouter(prefix="/api/v1", tags=["dashboard"], dependencies=[Depends(read_access)])
INCIDENT_GAP = timedelta(minutes=5)
SAMPLES = 2_000


class _Samples:
    """Events-total samples of the served pipelines, taken when the dashboard asks."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.points: dict[str, deque[tuple[float, float]]] = {}

    def add(self, statuses: Iterable[Mapping[str, Any]], now: float) -> None:
        """Remember each pipeline's events total at ``now``."""
        with self.lock:
            for status in statuses:
                total = status.get("events_total")
                if isinstance(total, int | float):
                    points = self.points.setdefault(str(status.get("name")), deque(maxlen=SAMPLES))
                    points.append((now, float(total)))

    def spans(self) -> list[tuple[str, float, float, float]]:
        """(pipeline, start, end, events) between consecutive samples."""
        with self.lock:
            return [
                (name, t0, t1, max(0.0, v1 - v0))
                for name, points in self.points.items()
                for (t0, v0), (t1, v1) in zip(points, list(points)[1:], strict=False)
            ]


def _samples(request: Request) -> _Samples:
    found = getattr(request.app.state, "sluice_samples", None)
    if found is None:
        found = request.app.state.sluice_samples = _Samples()
    return found


def _spread(
    buckets: list[float], start: float, width: float, t0: float, t1: float, events: float
) -> None:
    """Add ``events`` done evenly over ``[t0, t1]`` to the buckets they overlap."""
    if t1 <= t0:
        index = int((t1 - start) // width)
        if 0 <= index < len(buckets):
            buckets[index] += events
        return
    rate = events / (t1 - t0)
    for index in range(len(buckets)):
        lo, hi = start + index * width, start + (index + 1) * width
        overlap = min(hi, t1) - max(lo, t0)
        if overlap > 0:
            buckets[index] += rate * overlap


def _runs_spans(state: AppState, since: datetime) -> list[tuple[str, float, float, float]]:
    from sluice.storage.db import get_engine
    from sluice.storage.runs import RunHistory

    history = RunHistory(get_engine(str(state.settings.metadata_url)))
    out = []
    for run in history.recent(limit=1000):
        stats, started, finished = run["stats"], run["started_at"], run["finished_at"]
        if not stats or finished is None or not stats.get("events_in"):
            continue
        started, finished = _aware(started), _aware(finished)
        if finished < since:
            continue
        begin = finished - timedelta(seconds=float(stats.get("seconds") or 0))
        name = str(run["pipeline"]).partition("#")[0]
        out.append(
            (name, max(begin, started).timestamp(), finished.timestamp(), stats["events_in"])
        )
    return out


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@router.get("/throughput")
async def throughput(
    request: Request,
    minutes: int = Query(60, ge=5, le=7 * 24 * 60, description="how far back"),
    buckets: int = Query(60, ge=5, le=500, description="points per pipeline"),
    state: AppState = Depends(get_state),
) -> JSONOut:
    """Events/s per pipeline over time: finished runs from the run history plus live samples."""
    samples = _samples(request)

    def work() -> dict[str, Any]:
        now = time.time()
        statuses = state.pipelines.list() if state.pipelines is not None else []
        samples.add(statuses, now)
        start = now - minutes * 60
        width = minutes * 60 / buckets
        series: dict[str, list[float]] = {str(s.get("name")): [0.0] * buckets for s in statuses}
        since = datetime.fromtimestamp(start, UTC)
        for name, t0, t1, events in _runs_spans(state, since) + samples.spans():
            _spread(series.setdefault(name, [0.0] * buckets), start, width, t0, t1, events)
        return {
            "start": since.isoformat(),
            "bucket_seconds": width,
            "pipelines": {
                name: [round(v / width, 3) for v in values] for name, values in series.items()
            },
        }

    return JSONOut(await to_thread.run_sync(work))


@router.get("/pipelines/{name}/runs")
async def pipeline_runs(
    name: str, limit: int = Query(20, ge=1, le=500), state: AppState = Depends(get_state)
) -> JSONOut:
    """Recent runs of one pipeline with their counters and errors, newest first."""
    from sluice.storage.db import get_engine
    from sluice.storage.runs import RunHistory

    def work() -> list[dict[str, Any]]:
        runs = RunHistory(get_engine(str(state.settings.metadata_url))).recent(name, limit=limit)
        return [
            {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in r.items()}
            for r in runs
        ]

    return JSONOut(await to_thread.run_sync(work))


def _key_column(view: TableView) -> str | None:
    return next((c for c in view.columns if c == "key" or c.endswith("_id")), None)


def _incident_sql(view: TableView, model: str, key: str, time_col: str, fetch: int) -> str:
    names = set(view.columns)

    def col(suffix: str, default: str = "NULL") -> str:
        return ident(f"{model}_{suffix}") if f"{model}_{suffix}" in names else default

    gap = int(INCIDENT_GAP.total_seconds())
    onset = col("onset", "0")
    return f"""
WITH flagged AS (
  SELECT CAST({ident(key)} AS VARCHAR) AS key, {ident(time_col)} AS t,
         {col("score")} AS score, {col("reason")} AS reason, {onset} AS onset
  FROM {ident(view.name)} WHERE {ident(model + "_anomaly")}
), marked AS (
  SELECT *, CASE WHEN lag(t) OVER w IS NULL
                   OR t - lag(t) OVER w > INTERVAL {gap} SECOND
                   OR COALESCE(onset, 0) > 0 THEN 1 ELSE 0 END AS opens
  FROM flagged WINDOW w AS (PARTITION BY key ORDER BY t)
), numbered AS (
  SELECT *, SUM(opens) OVER (PARTITION BY key ORDER BY t ROWS UNBOUNDED PRECEDING) AS n
  FROM marked
)
SELECT {literal(view.name)} AS "table", {literal(model)} AS model, key,
       MIN(t) AS start, MAX(t) AS "end", COUNT(*) AS events, MAX(score) AS peak_score,
       arg_max(reason, COALESCE(score, 0)) FILTER (WHERE reason IS NOT NULL) AS reason
FROM numbered GROUP BY key, n ORDER BY start DESC LIMIT {fetch}
"""


@router.get("/incidents")
async def incidents(
    table: str | None = None,
    limit: int = Query(50, ge=1, le=1000),
    state: AppState = Depends(get_state),
) -> JSONOut:
    """Anomalies grouped into incidents per key (a new onset or a 5-minute gap opens one)."""

    def work() -> list[dict[str, Any]]:
        engine = state.engine()
        found: list[dict[str, Any]] = []
        for view in table_views(engine).values():
            if view.is_dead_letters or (table is not None and view.name != table):
                continue
            key, time_col = _key_column(view), view.time_column()
            if key is None or time_col is None:
                continue
            for model in view.anomaly_models:
                found += rows_of(engine.query(_incident_sql(view, model, key, time_col, limit)))
        found.sort(key=lambda r: str(r["start"]), reverse=True)
        return found[:limit]

    return await respond(state, work)


@router.get("/series")
async def key_series(
    table: str,
    key: str,
    limit: int = Query(500, ge=1, le=5000),
    state: AppState = Depends(get_state),
) -> JSONOut:
    """One key's recent rows: time, the models' features and whether each row alerted."""

    def work() -> dict[str, Any]:
        engine = state.engine()
        view = table_views(engine).get(table)
        if view is None:
            raise ApiError(404, f"no table named {table!r}", {"table": table})
        key_col, time_col = _key_column(view), view.time_column()
        if key_col is None or time_col is None:
            raise ApiError(400, f"table {table!r} has no key or time column", None)
        features = _features(state, view)
        flags = " OR ".join(ident(c) for c in view.anomaly_columns) or "FALSE"
        picked = ", ".join(ident(c) for c in features)
        sql = (
            f"SELECT {ident(time_col)} AS t, {picked + ', ' if picked else ''}"
            f"COALESCE({flags}, FALSE) AS alerted FROM {ident(view.name)} "
            f"WHERE CAST({ident(key_col)} AS VARCHAR) = {literal(key)} "
            f"ORDER BY {ident(time_col)} DESC LIMIT {limit}"
        )
        rows = rows_of(engine.query(sql))
        rows.reverse()
        return {
            "table": table,
            "key": key,
            "key_column": key_col,
            "features": features,
            "rows": rows,
        }

    return await respond(state, work)


def _features(state: AppState, view: TableView) -> list[str]:
    """The features of the table's models (from the models list), else its numeric columns."""
    models = set(view.anomaly_models)
    found: list[str] = []
    if state.models_provider is not None:
        for entry in state.models_provider():
            if entry.get("name") in models:
                found += [f for f in entry.get("features") or [] if f in view.columns]
    return list(dict.fromkeys(found))[:6]


@router.get("/drift")
async def drift_events(
    limit: int = Query(50, ge=1, le=1000), state: AppState = Depends(get_state)
) -> JSONOut:
    """Recent drift detections (pipeline, model, feature, detector, value, threshold)."""
    from sluice.models.drift import DriftLog
    from sluice.storage.db import get_engine

    def work() -> list[dict[str, Any]]:
        table = DriftLog(get_engine(str(state.settings.metadata_url))).recent(limit)
        return rows_of(table)

    return JSONOut(await to_thread.run_sync(work))


@router.get("/actions/summary")
async def actions_summary(state: AppState = Depends(get_state)) -> JSONOut:
    """Deliveries by rule and status, recent failures with their error, the waiting queue."""
    from sluice.actions.service import ActionsService

    def work() -> dict[str, Any]:
        service = ActionsService(settings=state.settings)
        failures = service.list("failed", limit=10) + service.list("dead", limit=10)
        queue = service.list("awaiting_approval", limit=20) + service.list("pending", limit=20)
        return {"by_rule": service.by_rule(), "failures": failures, "queue": queue}

    return JSONOut(await to_thread.run_sync(work))


@router.get("/dlq/reasons")
async def dead_letter_reasons(state: AppState = Depends(get_state)) -> JSONOut:
    """Dead letters counted by pipeline, stage and reason, most frequent first."""
    return await respond(state, lambda: dead_letter_counts(state, ["pipeline", "stage", "reason"]))
