"""Reading request bodies with a size limit, and JSON whatever the content type says.

A body sent with ``Content-Encoding: gzip`` or ``deflate`` (Logstash's ``http`` output with
``http_compression => true``, Fluent Bit's ``compress gzip``) is decompressed, and the limit
applies to the decompressed bytes too: a decompression bomb is refused with 413 after at
most ``limit + 1`` bytes of output.
"""

from __future__ import annotations

import zlib
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
    """The body, decompressed; 413 as soon as it (or its decompressed form) passes ``limit``."""
    raw = await _read_raw(request, limit)
    return decode_content(raw, request.headers.get("content-encoding"), limit)


_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def decode_content(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo ``Content-Encoding`` (gzip, deflate or identity), stopping past ``limit`` bytes."""
    name = (encoding or "identity").strip().lower()
    if name in ("", "identity"):
        return body
    if name not in _WBITS:
        raise ApiError(
            415,
            f"unsupported Content-Encoding {encoding!r}; send gzip, deflate or none",
            {"content_encoding": encoding},
        )
    try:
        return _inflate(body, _WBITS[name], limit)
    except zlib.error:
        if name != "deflate":
            raise ApiError(400, f"the body is not valid {name} data", None) from None
    try:  # some clients send raw deflate, without the zlib header
        return _inflate(body, -zlib.MAX_WBITS, limit)
    except zlib.error:
        raise ApiError(400, "the body is not valid deflate data", None) from None


def _inflate(body: bytes, wbits: int, limit: int) -> bytes:
    inflater = zlib.decompressobj(wbits)
    out = inflater.decompress(body, limit + 1)
    if len(out) > limit or inflater.unconsumed_tail:
        raise ApiError(
            413,
            f"the decompressed body is larger than the limit of {limit} bytes",
            {"limit_bytes": limit, "content_encoding": "decompressed"},
        )
    if not inflater.eof:
        raise ApiError(400, "the compressed body is truncated", None)
    return out


async def _read_raw(request: Request, limit: int) -> bytes:
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
