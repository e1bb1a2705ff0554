"""Lake and warehouse data: ``tables``, ``tables/{name}``, ``query`` and ``anomalies``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BeforeValidator

from sluice.api.auth import read_access
from sluice.api.body import json_body
from sluice.api.deps import AppState, get_state
from sluice.api.errors import ApiError, JSONOut
from sluice.api.lake import (
    TableView,
    find_table,
    ident,
    literal,
    page,
    rows_of,
    table_views,
    time_filters,
)
from sluice.storage.query import ResultTooLargeError

router = APIRouter(prefix="/api/v1", tags=["data"], dependencies=[Depends(read_access)])
T = TypeVar("T")
Limit = Query(100, ge=1, le=1000, description="rows per page")
Offset = Query(0, ge=0, le=10_000_000, description="rows to skip")
MAX_QUERY_ROWS = 10_000


def _iso_only(value: Any) -> Any:
    """Refuse numbers for a time (pydantic would read them as epoch seconds)."""
    if isinstance(value, str) and value.strip().lstrip("+-").replace(".", "", 1).isdigit():
        raise ValueError("expected an ISO-8601 time like 2026-01-01T00:00:00Z")
    return value


IsoTime = Annotated[datetime | None, BeforeValidator(_iso_only), Query(description="ISO-8601 time")]


async def run_engine(state: AppState, work: Callable[[], T]) -> T:
    """Run blocking engine work in the query pool (429 when full, 504 after the timeout)."""
    assert state.query_pool is not None
    return await state.query_pool.run(work, state.config.query_timeout)


def bounded_json(state: AppState, content: Any) -> JSONOut:
    """Render ``content`` (in the calling worker thread); 413 past ``max_result_bytes``."""
    response = JSONOut(content)
    limit = state.config.max_result_bytes
    if len(response.body) > limit:
        raise too_large(limit)
    return response


def too_large(limit: int) -> ApiError:
    """The 413 answered for a result larger than ``limit`` bytes."""
    return ApiError(
        413,
        f"the result is larger than the limit of {limit} bytes (SLUICE_API_MAX_RESULT_BYTES); "
        "select fewer columns or rows, or aggregate",
        {"limit_bytes": limit},
    )


async def respond(state: AppState, work: Callable[[], Any]) -> JSONOut:
    """Run ``work`` and render its answer off the event loop, bounded in bytes."""
    return await run_engine(state, lambda: bounded_json(state, work()))


@router.get("/tables")
async def list_tables(state: AppState = Depends(get_state)) -> JSONOut:
    """Every queryable table with its kind, row count and columns."""

    def work() -> list[dict[str, Any]]:
        return [
            {"name": v.name, "kind": v.kind, "rows": v.rows, "columns": list(v.columns)}
            for v in table_views(state.engine()).values()
        ]

    return await respond(state, work)


@router.get("/tables/{name}")
async def table_rows(
    name: str, limit: int = Limit, offset: int = Offset, state: AppState = Depends(get_state)
) -> JSONOut:
    """One page of a table's rows (the name must be one that ``/tables`` lists)."""

    def work() -> dict[str, Any]:
        engine = state.engine()
        view = find_table(engine, name)
        sql = f"SELECT * FROM {ident(view.name)} LIMIT {limit + 1} OFFSET {offset}"
        return page(rows_of(engine.query(sql)), limit, offset, table=name)

    return await respond(state, work)


@router.post(
    "/query",
    summary="Run one read-only SQL statement",
    openapi_extra={
        "requestBody": {
            "content": {"application/json": {"example": {"sql": "SELECT 1 AS x", "limit": 100}}}
        }
    },
)
async def query(request: Request, state: AppState = Depends(get_state)) -> JSONOut:
    """Run ``{"sql": ..., "limit": n}``; a statement that writes is refused with 400."""
    body = await json_body(request, 1024 * 1024)
    if not isinstance(body, dict) or not isinstance(body.get("sql"), str):
        raise ApiError(400, 'send {"sql": "SELECT ...", "limit": 1000}', None)
    limit = body.get("limit", 1000)
    if not isinstance(limit, int) or not 1 <= limit <= MAX_QUERY_ROWS:
        raise ApiError(400, f"'limit' must be an integer from 1 to {MAX_QUERY_ROWS}", None)
    sql: str = body["sql"]
    cap = state.config.max_result_bytes

    def work() -> dict[str, Any]:
        try:
            result = state.engine().query(sql, limit=limit + 1, max_bytes=cap)
        except ResultTooLargeError:
            raise too_large(cap) from None
        out = page(rows_of(result), limit, 0, columns=result.column_names)
        out["truncated"] = out.pop("next_offset") is not None
        return out

    return await respond(state, work)


def _anomaly_tables(
    state: AppState, views: dict[str, TableView], pipeline: str | None, table: str | None
) -> list[TableView]:
    candidates = [v for v in views.values() if v.anomaly_columns and not v.is_dead_letters]
    if table is not None:
        candidates = [v for v in candidates if v.name == table]
        if not candidates:
            raise ApiError(404, f"no table named {table!r} with <model>_anomaly columns", None)
    if pipeline is not None:
        names = {pipeline}
        if state.pipelines is not None:
            status = state.pipelines.get(pipeline)
            names = set(status.get("tables") or []) or names
        candidates = [v for v in candidates if v.name in names]
    return candidates


def _key_column(view: TableView, key_column: str | None) -> str:
    if key_column is not None:
        if key_column not in view.columns:
            raise ApiError(400, f"table {view.name!r} has no column {key_column!r}", None)
        return key_column
    found = next((c for c in view.columns if c == "key" or c.endswith("_id")), None)
    if found is None:
        raise ApiError(
            400,
            f"table {view.name!r} has no obvious key column; pass key_column",
            {"columns": list(view.columns)},
        )
    return found


def _anomaly_sql(view: TableView, filters: dict[str, Any], fetch: int) -> tuple[str, str | None]:
    flags = " OR ".join(f"{ident(c)}" for c in view.anomaly_columns)
    conditions = [f"({flags})"]
    if filters["key"] is not None:
        column = _key_column(view, filters["key_column"])
        conditions.append(f"CAST({ident(column)} AS VARCHAR) = {literal(filters['key'])}")
    time_column = view.time_column(filters["time_column"])
    conditions += time_filters(time_column, filters["since"], filters["until"])
    order = f" ORDER BY {ident(time_column)} DESC" if time_column else ""
    sql = f"SELECT * FROM {ident(view.name)} WHERE {' AND '.join(conditions)}{order} LIMIT {fetch}"
    return sql, time_column


@router.get("/anomalies")
async def anomalies(
    pipeline: str | None = None,
    table: str | None = None,
    key: str | None = Query(None, description="only rows whose key column equals this"),
    key_column: str | None = None,
    time_column: str | None = None,
    since: IsoTime = None,
    until: IsoTime = None,
    limit: int = Limit,
    offset: int = Offset,
    state: AppState = Depends(get_state),
) -> JSONOut:
    """Rows where any ``<model>_anomaly`` column is true, newest first, with their reasons."""
    filters = {
        "key": key,
        "key_column": key_column,
        "time_column": time_column,
        "since": since,
        "until": until,
    }

    def work() -> list[dict[str, Any]]:
        engine = state.engine()
        found: list[tuple[Any, dict[str, Any]]] = []
        for view in _anomaly_tables(state, table_views(engine), pipeline, table):
            sql, time_col = _anomaly_sql(view, filters, offset + limit + 1)
            for row in rows_of(engine.query(sql)):
                found.append((row.get(time_col) if time_col else None, {"table": view.name, **row}))
        found.sort(key=lambda item: (item[0] is not None, str(item[0])), reverse=True)
        return [row for _, row in found[offset : offset + limit + 1]]

    return await respond(state, lambda: page(work(), limit, offset))
