"""``/api/v1/pipelines``: status of the served pipelines; start and stop (admin)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from anyio import to_thread
from fastapi import APIRouter, Depends

from sluice.api.auth import admin_access, read_access
from sluice.api.deps import AppState, PipelinesProvider, get_state
from sluice.api.errors import ApiError, JSONOut

router = APIRouter(prefix="/api/v1", tags=["pipelines"])


def _provider(state: AppState) -> PipelinesProvider:
    if state.pipelines is None:
        raise ApiError(
            404,
            "this server runs no pipelines (start them with `sluice serve PIPELINE.yaml`)",
            None,
        )
    return state.pipelines


async def _call(action: Callable[[str], Any], name: str) -> JSONOut:
    return JSONOut(await to_thread.run_sync(action, name))


@router.get("/pipelines", dependencies=[Depends(read_access)])
async def list_pipelines(state: AppState = Depends(get_state)) -> JSONOut:
    """Status, events/s, lag, last checkpoint and errors of every served pipeline."""
    if state.pipelines is None:
        return JSONOut([])
    return JSONOut(await to_thread.run_sync(state.pipelines.list))


@router.get("/pipelines/{name}", dependencies=[Depends(read_access)])
async def get_pipeline(name: str, state: AppState = Depends(get_state)) -> JSONOut:
    """Status of one pipeline (404 when it is not served here)."""
    return await _call(_provider(state).get, name)


@router.post("/pipelines/{name}/start", dependencies=[Depends(admin_access)])
async def start_pipeline(name: str, state: AppState = Depends(get_state)) -> JSONOut:
    """Start (or resume) a served pipeline."""
    return await _call(_provider(state).start, name)


@router.post("/pipelines/{name}/stop", dependencies=[Depends(admin_access)])
async def stop_pipeline(name: str, state: AppState = Depends(get_state)) -> JSONOut:
    """Stop a pipeline after its current epoch."""
    return await _call(_provider(state).stop, name)
