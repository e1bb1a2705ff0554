"""Automation: job runs (list, trigger) and the actions audit trail."""

from __future__ import annotations

from typing import Any

from anyio import to_thread
from fastapi import APIRouter, Depends, Path, Query, Request

from sluice.api.auth import admin_access, read_access, write_access
from sluice.api.body import read_body
from sluice.api.deps import AppState, get_state
from sluice.api.errors import ApiError, JSONOut
from sluice.core.errors import ConfigError

router = APIRouter(tags=["automation"])


@router.get("/api/v1/jobs/{name}/runs", dependencies=[Depends(read_access)])
async def job_runs(
    name: str, limit: int = Query(20, ge=1, le=500), state: AppState = Depends(get_state)
) -> JSONOut:
    """Recent runs of one job with their task attempts."""
    from sluice.orchestration.service import store_for

    def work() -> list[dict[str, Any]]:
        runs = store_for(state.settings).recent(name, limit=limit)
        return [
            {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in r.items()}
            for r in runs
        ]

    return JSONOut(await to_thread.run_sync(work))


@router.post("/api/v1/jobs/{name}/runs", status_code=202, dependencies=[Depends(write_access)])
async def trigger_job(name: str, request: Request, state: AppState = Depends(get_state)) -> JSONOut:
    """Queue a manual run of a job (``{"params": {...}}`` optional); the scheduler runs it.

    Params must be declared by the job, with the type of their declared default (400
    otherwise); tasks receive them as data (see the README's security section).
    """
    import orjson

    from sluice.orchestration.service import trigger

    body = await read_body(request, 1024 * 1024)
    params: dict[str, Any] = {}
    if body.strip():
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, f"invalid JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise ApiError(400, 'the body must be a JSON object like {"params": {...}}')
        params = parsed.get("params", {})
        if not isinstance(params, dict):
            raise ApiError(400, "'params' must be an object")
    try:
        run_id = await to_thread.run_sync(lambda: trigger(state.settings, name, params))
    except ConfigError as exc:
        key = exc.key or ""
        if not key.startswith("params."):
            raise
        detail = {"job": name, "param": key.removeprefix("params.")}
        raise ApiError(400, exc.detail, detail) from None
    return JSONOut({"job": name, "run_id": run_id, "state": "queued"}, status_code=202)


@router.get("/api/v1/actions", dependencies=[Depends(read_access)])
async def list_actions(
    status: str | None = None,
    pipeline: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=10_000_000),
    state: AppState = Depends(get_state),
) -> JSONOut:
    """Actions with delivery status and attempts (the audit trail)."""
    from sluice.actions.service import ActionsService

    def work() -> Any:
        service = ActionsService(settings=state.settings)
        return {
            "actions": service.list(status, pipeline=pipeline, limit=limit, offset=offset),
            "stats": service.stats(pipeline),
        }

    return JSONOut(await to_thread.run_sync(work))


@router.post("/api/v1/actions/{action_id}/{verb}", dependencies=[Depends(admin_access)])
async def act_on_action(
    verb: str, action_id: int = Path(ge=1, le=2**63 - 1), state: AppState = Depends(get_state)
) -> JSONOut:
    """``retry``, ``approve`` or ``reject`` one action."""
    from sluice.actions.service import ActionsService

    if verb not in ("retry", "approve", "reject"):
        raise ApiError(404, f"unknown action command {verb!r}; use retry, approve or reject")
    service = ActionsService(settings=state.settings)
    return JSONOut(await to_thread.run_sync(lambda: getattr(service, verb)(action_id)))
