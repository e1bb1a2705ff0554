"""API errors: every 4xx/5xx is ``{"error": "...", "detail": ...}`` saying what and where."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from sluice.core.errors import (
    ModelError,
    NotFoundError,
    PermanentError,
    QueryError,
    SchemaError,
    SluiceError,
)

logger = logging.getLogger("sluice.api")


def _default(value: Any) -> Any:
    return str(value)


class JSONOut(Response):
    """JSON response rendered by orjson (datetimes, numpy values and NaN handled)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        """Serialise ``content``; unknown types become strings."""
        options = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
        return orjson.dumps(content, default=_default, option=options)


class ErrorBody(BaseModel):
    """The JSON body of every error answer: what is wrong, and where or why."""

    error: str
    detail: Any = None


_ERRORS = {
    400: "The request is malformed or names something invalid",
    401: "An API key is missing or unknown",
    403: "The key's role (or, without keys, the client's address) is not allowed",
    404: "The named stream, table, pipeline, job, model or action does not exist",
    413: "The body or the result is larger than its limit",
    429: "Too many pending events or running queries; retry after Retry-After seconds",
    503: "The server cannot serve this now (no model, not ready)",
    504: "The query took longer than its timeout",
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text} for code, text in _ERRORS.items()
}


class ApiError(Exception):
    """An error answered as JSON with a status code."""

    def __init__(
        self, status: int, error: str, detail: Any = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(error)
        self.status, self.error, self.detail, self.headers = status, error, detail, headers


def error_response(
    status: int, error: str, detail: Any = None, headers: dict[str, str] | None = None
) -> JSONOut:
    """The JSON body of an error."""
    return JSONOut({"error": error, "detail": detail}, status_code=status, headers=headers)


def status_of(exc: SluiceError) -> int:
    """HTTP status for a Sluice error."""
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, QueryError | SchemaError):
        return 400
    if isinstance(exc, ModelError):
        return 422
    return 400 if isinstance(exc, PermanentError) else 500


def install_error_handlers(app: FastAPI) -> None:
    """Map ApiError, Sluice errors, HTTP errors and validation errors to the JSON shape."""

    async def api_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return error_response(exc.status, exc.error, exc.detail, exc.headers)

    async def sluice_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SluiceError)
        status = status_of(exc)
        if status >= 500:
            logger.error("%s %s failed: %s", request.method, request.url.path, exc)
        return error_response(status, str(exc), {"type": type(exc).__name__})

    async def http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        headers = dict(exc.headers) if exc.headers else None
        return error_response(exc.status_code, str(exc.detail), None, headers)

    async def validation_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        detail = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type")}
            for e in exc.errors()
        ]
        where = ", ".join(".".join(str(p) for p in d["loc"]) + ": " + d["msg"] for d in detail)
        return error_response(422, f"invalid request: {where}", detail)

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(SluiceError, sluice_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
