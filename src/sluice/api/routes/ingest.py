"""``POST /api/v1/ingest/{stream}``: push events into the embedded log, 202 once durable.

Which streams exist: those read by a served pipeline's ``type: log`` source, and those
already in the log (created by ``sluice ingest`` or an earlier push). Any other name is a
404 unless ``SLUICE_API_AUTO_CREATE_STREAMS=1``. When the slowest consumer of the stream is
more than ``max_backlog`` records behind, the answer is 429 with ``Retry-After``. A body
with more than ``max_items`` events is refused with 413 before anything is appended. Bodies
may be gzip- or deflate-compressed (``Content-Encoding``), as Logstash's ``json_batch`` and
Fluent Bit send them; the size limit applies to the decompressed body as well.
"""

from __future__ import annotations

from anyio import to_thread
from fastapi import APIRouter, Depends, Request

from sluice.api.auth import write_access
from sluice.api.body import read_body
from sluice.api.deps import AppState, get_state
from sluice.api.errors import ApiError, JSONOut
from sluice.storage.log import PayloadError, check_stream_name, is_stream_name, parse_events

router = APIRouter(prefix="/api/v1", tags=["ingest"])


def _check_stream(state: AppState, stream: str) -> None:
    try:
        check_stream_name(stream)
    except ValueError as exc:
        raise ApiError(400, str(exc), {"stream": stream}) from None
    known = state.log.exists(stream) or stream in state.served_streams()
    if not known and not state.config.auto_create_streams:
        raise ApiError(
            404,
            f"stream {stream!r} does not exist",
            {
                "stream": stream,
                "hint": "serve a pipeline with source {type: log, stream: ...}, create it with "
                "`sluice ingest`, or set SLUICE_API_AUTO_CREATE_STREAMS=1",
            },
        )
    if state.log.exists(stream):
        lag = state.log.lag(stream)
        if lag > state.config.max_backlog:
            raise ApiError(
                429,
                f"stream {stream!r} has {lag} unprocessed records; retry later",
                {"stream": stream, "lag": lag, "limit": state.config.max_backlog},
                headers={"Retry-After": str(state.config.retry_after)},
            )


def _check_items(state: AppState, stream: str, count: int) -> None:
    """413 when one request carries more events than ``max_items``."""
    limit = state.config.max_items
    if count > limit:
        raise ApiError(
            413,
            f"the body holds {count} events, more than the limit of {limit} per request "
            "(SLUICE_API_MAX_ITEMS); split it into smaller requests",
            {"stream": stream, "items": count, "limit_items": limit},
        )


@router.post(
    "/ingest/{stream}",
    status_code=202,
    dependencies=[Depends(write_access)],
    summary="Append a JSON object, a JSON array of objects, or NDJSON to a stream",
)
async def ingest(stream: str, request: Request, state: AppState = Depends(get_state)) -> JSONOut:
    """Validate the events and append them durably; 202 with the offsets they got."""
    metrics = state.metrics
    try:
        _check_stream(state, stream)
        body = await read_body(request, state.config.max_body_bytes)

        def parse_and_append() -> tuple[int, int, int]:
            events = parse_events(body)
            _check_items(state, stream, len(events))
            first, last = state.log.append(stream, events)
            return len(events), first, last

        count, first, last = await to_thread.run_sync(parse_and_append)
    except PayloadError as exc:
        metrics.ingest_requests.labels("invalid", "400").inc()
        where = {k: v for k, v in (("line", exc.line), ("item", exc.item)) if v is not None}
        raise ApiError(400, str(exc), {"stream": stream, **where}) from None
    except ApiError as exc:
        known = is_stream_name(stream) and state.log.exists(stream)
        metrics.ingest_requests.labels(stream if known else "unknown", str(exc.status)).inc()
        raise
    metrics.ingest_requests.labels(stream, "202").inc()
    metrics.ingest_events.labels(stream).inc(count)
    metrics.ingest_bytes.labels(stream).inc(len(body))
    return JSONOut(
        {"stream": stream, "count": count, "first_offset": first, "last_offset": last},
        status_code=202,
    )
