"""``POST /api/v1/predict``: score a string, a record or a list of records.

The body is read as JSON whatever its Content-Type, so the plain
``curl -X POST .../api/v1/predict -d '{"data": "sample input"}'`` (sent as
``application/x-www-form-urlencoded``) works as well as ``application/json``.
"""

from __future__ import annotations

import time
from typing import Any

from anyio import to_thread
from fastapi import APIRouter, Request

from sluice.api.auth import read_access
from sluice.api.body import parse_json, read_body
from sluice.api.deps import AppState
from sluice.api.errors import ApiError, JSONOut

router = APIRouter(prefix="/api/v1", tags=["predict"])
_MAX_PREDICT_BODY = 1024 * 1024
_EXAMPLE = {"data": "sample input"}


def _parse_request(payload: Any) -> tuple[Any, str | None]:
    if not isinstance(payload, dict):
        raise ApiError(
            400,
            'the body must be a JSON object like {"data": ...}',
            {"got": type(payload).__name__},
        )
    if "data" not in payload:
        raise ApiError(
            400,
            "missing 'data': send a string, a record or a list of records",
            {"keys": sorted(payload)},
        )
    data, model = payload["data"], payload.get("model")
    if not isinstance(data, str | dict | list):
        raise ApiError(
            400,
            "'data' must be a string, an object or a list",
            {"got": type(data).__name__},
        )
    if isinstance(data, list) and not all(isinstance(item, str | dict) for item in data):
        raise ApiError(400, "'data' as a list must hold records (objects) or strings", None)
    if model is not None and not isinstance(model, str):
        raise ApiError(400, "'model' must be a model name (string)", None)
    return data, model


@router.post(
    "/predict",
    summary="Predict with the default model (text for a string, anomaly for records) or 'model'",
    openapi_extra={"requestBody": {"content": {"application/json": {"example": _EXAMPLE}}}},
)
async def predict(request: Request) -> JSONOut:
    """Run the predictor on ``data`` and return its answer (off the event loop by default)."""
    # auth and state are read here rather than as dependencies: this is the hot path
    await read_access(request)
    state: AppState = request.app.state.sluice
    body = await read_body(request, _MAX_PREDICT_BODY)

    def work() -> tuple[str, float, JSONOut]:
        data, model = _parse_request(parse_json(body))
        predictor = state.predictor
        if predictor is None:
            raise ApiError(503, "no model is available for predictions in this server", None)
        started = time.perf_counter()
        result = predictor(data, model=model)
        used = result.get("model") if isinstance(result, dict) else None
        return str(used or model or "unknown"), time.perf_counter() - started, JSONOut(result)

    if state.config.predict_in_thread:
        model, seconds, response = await to_thread.run_sync(work)
    else:
        model, seconds, response = work()
    state.metrics.predict_seconds.labels(model).observe(seconds)
    return response
