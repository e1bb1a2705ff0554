"""Reading request bodies with a size limit, and JSON whatever the content type says."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request
from starlette.requests import ClientDisconnect

from sluice.api.errors import ApiError


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413, f"the body is larger than the limit of {limit} bytes", {"limit_bytes": limit}
    )


async def read_body(request: Request, limit: int) -> bytes:
    """Read the body, answering 413 as soon as it passes ``limit`` bytes (never buffers more)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
    except ClientDisconnect:
        raise ApiError(
            400, "the client disconnected before sending the whole body", {"received_bytes": size}
        ) from None
    return b"".join(chunks)


async def json_body(request: Request, limit: int) -> Any:
    """Parse the body as JSON regardless of Content-Type (curl -d sends form-urlencoded)."""
    return parse_json(await read_body(request, limit))


def parse_json(body: bytes) -> Any:
    """Parse a request body as JSON; 400 naming the line when it is not."""
    if not body.strip():
        raise ApiError(400, "the body is empty; send a JSON object", None)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        line = body.count(b"\n", 0, exc.pos) + 1
        raise ApiError(
            400, f"invalid JSON at line {line}: {exc.msg}", {"line": line, "position": exc.pos}
        ) from None
