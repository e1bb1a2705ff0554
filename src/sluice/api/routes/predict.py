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
# A request runs in a worker thread (a large body or a slow model must not stall the other
# requests) unless its body is this small and its model's last answer took at most
# _INLINE_SECONDS: then the thread hop would cost more than the prediction (about half the
# throughput of a sub-millisecond model), and the event loop is held for at most that long.
_INLINE_BODY = 4 * 1024
_INLINE_SECONDS = 0.001


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
    if not state.config.predict_in_thread:
        model, seconds, response = _answer(state, *_parse_request(parse_json(body)))
    elif len(body) <= _INLINE_BODY:
        data, requested = _parse_request(parse_json(body))
        if state.predict_seconds.get(requested, _INLINE_SECONDS + 1) <= _INLINE_SECONDS:
            model, seconds, response = _answer(state, data, requested)
        else:
            model, seconds, response = await to_thread.run_sync(_answer, state, data, requested)
    else:
        model, seconds, response = await to_thread.run_sync(
            lambda: _answer(state, *_parse_request(parse_json(body)))
        )
    state.metrics.predict_seconds.labels(model).observe(seconds)
    return response


def _answer(state: AppState, data: Any, requested: str | None) -> tuple[str, float, JSONOut]:
    """The predictor's answer, the model that gave it and the seconds it took (recorded per
    requested model: the next small request for a model this fast runs on the event loop)."""
    predictor = state.predictor
    if predictor is None:
        raise ApiError(503, "no model is available for predictions in this server", None)
    started = time.perf_counter()
    result = predictor(data, model=requested)
    seconds = time.perf_counter() - started
    state.predict_seconds[requested] = seconds
    used = result.get("model") if isinstance(result, dict) else None
    return str(used or requested or "unknown"), seconds, JSONOut(result)
