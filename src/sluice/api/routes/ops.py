"""Operations: ``models``, ``jobs``, ``streams``, ``dlq`` (list, summary, replay), health, metrics.

Dead letters live in lake tables with the dead-letter schema (pipeline, stage, reason, raw,
origin, ...). Replay re-appends the raw payloads of the dead letters that came from one log
stream (``origin`` = ``<stream>@<offset>``) back to that stream; each dead letter is
replayed at most once (the log remembers replayed origins), so replaying twice is harmless.
"""

from __future__ import annotations

from typing import Any

from anyio import to_thread
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import PlainTextResponse

from sluice.api.auth import admin_access, read_access
from sluice.api.body import json_body
from sluice.api.deps import AppState, QueryEngineLike, get_state
from sluice.api.errors import ApiError, JSONOut
from sluice.api.lake import TableView, ident, literal, page, rows_of, table_views
from sluice.api.metrics import CONTENT_TYPE
from sluice.api.routes.data import Limit, Offset, respond
from sluice.storage.log import check_stream_name

router = APIRouter(tags=["operations"])
REPLAY_MAX = 100_000


@router.get("/api/v1/models", dependencies=[Depends(read_access)])
async def list_models(state: AppState = Depends(get_state)) -> JSONOut:
    """Registered models and their versions (empty when no registry is wired)."""
    provider = state.models_provider
    return JSONOut(await to_thread.run_sync(provider) if provider else [])


@router.get("/api/v1/jobs", dependencies=[Depends(read_access)])
async def list_jobs(state: AppState = Depends(get_state)) -> JSONOut:
    """Scheduled jobs and their recent runs (empty until orchestration is wired)."""
    provider = state.jobs_provider
    return JSONOut(await to_thread.run_sync(provider) if provider else [])


@router.get("/api/v1/streams", dependencies=[Depends(read_access)])
async def list_streams(state: AppState = Depends(get_state)) -> JSONOut:
    """Embedded-log streams with their offsets, consumers and lag."""

    def work() -> list[dict[str, Any]]:
        log = state.log
        return [
            {
                "name": s,
                "start_offset": log.start_offset(s),
                "end_offset": log.end_offset(s),
                "lag": log.lag(s),
                "consumers": log.consumers(s),
            }
            for s in log.streams()
        ]

    return JSONOut(await to_thread.run_sync(work))


def _dead_letter_union(views: dict[str, TableView]) -> str | None:
    tables = [v for v in views.values() if v.is_dead_letters]
    if not tables:
        return None
    cols = "pipeline, stage, reason, raw, origin"
    parts = []
    for view in tables:
        when = "rejected_at" if "rejected_at" in view.columns else "NULL"
        parts.append(
            f"SELECT {literal(view.name)} AS dlq_table, {cols}, {when} AS rejected_at "
            f"FROM {ident(view.name)}"
        )
    return " UNION ALL ".join(parts)


def _dlq_where(pipeline: str | None, stage: str | None) -> str:
    conditions = ["TRUE"]
    if pipeline is not None:
        conditions.append(f"pipeline = {literal(pipeline)}")
    if stage is not None:
        conditions.append(f"stage = {literal(stage)}")
    return " AND ".join(conditions)


@router.get("/api/v1/dlq", dependencies=[Depends(read_access)])
async def list_dead_letters(
    pipeline: str | None = None,
    stage: str | None = None,
    limit: int = Limit,
    offset: int = Offset,
    state: AppState = Depends(get_state),
) -> JSONOut:
    """Dead letters, newest first, with their reason, stage, raw payload and origin."""

    def work() -> list[dict[str, Any]]:
        engine = state.engine()
        union = _dead_letter_union(table_views(engine))
        if union is None:
            return []
        sql = (
            f"SELECT * FROM ({union}) WHERE {_dlq_where(pipeline, stage)} "
            f"ORDER BY rejected_at DESC NULLS LAST LIMIT {limit + 1} OFFSET {offset}"
        )
        return rows_of(engine.query(sql))

    return await respond(state, lambda: page(work(), limit, offset))


@router.get("/api/v1/dlq/summary", dependencies=[Depends(read_access)])
async def dead_letter_summary(state: AppState = Depends(get_state)) -> JSONOut:
    """Dead-letter counts per pipeline and stage, with the latest reason."""

    return await respond(
        state,
        lambda: dead_letter_counts(
            state, ["pipeline", "stage"], "arg_max(reason, rejected_at) AS last_reason"
        ),
    )


def dead_letter_counts(state: AppState, by: list[str], extra: str = "") -> list[dict[str, Any]]:
    """Dead letters counted by the ``by`` columns (with ``extra`` aggregates), largest first."""
    engine = state.engine()
    union = _dead_letter_union(table_views(engine))
    if union is None:
        return []
    keys = ", ".join(by)
    more = f", {extra}" if extra else ""
    sql = (
        f"SELECT {keys}, COUNT(*) AS count, MAX(rejected_at) AS last_at{more} FROM ({union}) "
        f"GROUP BY {keys} ORDER BY count DESC LIMIT 1000"
    )
    return rows_of(engine.query(sql))


@router.post("/api/v1/dlq/replay", dependencies=[Depends(admin_access)])
async def replay_dead_letters(request: Request, state: AppState = Depends(get_state)) -> JSONOut:
    """Re-append ``{"stream": s, "pipeline"?: p}`` dead letters from log stream ``s`` to it."""
    body = await json_body(request, 64 * 1024)
    stream = body.get("stream") if isinstance(body, dict) else None
    if not isinstance(stream, str):
        raise ApiError(400, 'send {"stream": "<log stream>", "pipeline": "<optional>"}', None)
    try:
        check_stream_name(stream)
    except ValueError as exc:
        raise ApiError(400, str(exc), {"stream": stream}) from None
    if not state.log.exists(stream):
        raise ApiError(404, f"stream {stream!r} does not exist", {"stream": stream})
    pipeline = body.get("pipeline")
    pipeline = pipeline if isinstance(pipeline, str) else None
    return await respond(
        state, lambda: replay_from_lake(state.engine(), state.log, stream, pipeline)
    )


def replay_from_lake(
    engine: QueryEngineLike, log: Any, stream: str, pipeline: str | None
) -> dict[str, Any]:
    """Re-append the raw payloads of ``stream``'s dead letters to it (``sluice dlq replay`` too)."""
    union = _dead_letter_union(table_views(engine))
    if union is None:
        return {"stream": stream, "found": 0, "replayed": 0}
    sql = (
        f"SELECT raw, origin FROM ({union}) WHERE {_dlq_where(pipeline, None)} "
        f"AND starts_with(origin, {literal(stream + '@')}) AND raw IS NOT NULL "
        f"ORDER BY origin LIMIT {REPLAY_MAX}"
    )
    found = engine.query(sql)
    raws = [r.encode() for r in found.column("raw").to_pylist()]
    count, first, last = log.replay(stream, raws, found.column("origin").to_pylist())
    return {
        "stream": stream,
        "found": found.num_rows,
        "replayed": count,
        "first_offset": first if count else None,
        "last_offset": last if count else None,
    }


@router.get("/healthz", tags=["health"])
@router.get("/api/v1/healthz", include_in_schema=False)
async def healthz() -> JSONOut:
    """Liveness: the process answers."""
    return JSONOut({"status": "ok"})


@router.get("/readyz", tags=["health"])
@router.get("/api/v1/readyz", include_in_schema=False)
async def readyz(state: AppState = Depends(get_state)) -> JSONOut:
    """Readiness: the log folder is writable, the pipelines runtime answers, none has failed."""

    def work() -> dict[str, str]:
        checks: dict[str, str] = {}
        try:
            state.log.root.mkdir(parents=True, exist_ok=True)
            checks["log"] = "ok"
        except OSError as exc:
            checks["log"] = f"failed: {exc.strerror}"
        if state.pipelines is not None:
            try:
                failed = [p["name"] for p in state.pipelines.list() if p.get("state") == "failed"]
                checks["pipelines"] = f"failed: {', '.join(failed)}" if failed else "ok"
            except Exception as exc:  # any failure means not ready
                checks["pipelines"] = f"failed: {type(exc).__name__}"
        return checks

    checks = await to_thread.run_sync(work)
    ready = all(v == "ok" for v in checks.values())
    body = {"status": "ready" if ready else "not ready", "checks": checks}
    if not ready:
        return JSONOut({"error": "not ready", "detail": body}, status_code=503)
    return JSONOut(body)


@router.get(
    "/metrics",
    tags=["health"],
    dependencies=[Depends(read_access)],
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
@router.get("/api/v1/metrics", include_in_schema=False, dependencies=[Depends(read_access)])
async def metrics(state: AppState = Depends(get_state)) -> Response:
    """Prometheus metrics in text format."""
    return Response(await to_thread.run_sync(state.metrics.render), media_type=CONTENT_TYPE)
