"""What the API needs from the rest of Sluice: small protocols, configuration and app state.

The serve runtime implements :class:`PipelinesProvider`; ``sluice.predict`` is the
:data:`Predictor`; the model registry gives a :data:`ModelsProvider`. Every one of them is
optional: without it the matching endpoints answer an empty list or ``503``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypedDict

from fastapi import Request

from sluice.api.pool import QueryPool
from sluice.core.settings import Settings
from sluice.storage.log import EmbeddedLog

if TYPE_CHECKING:
    from sluice.api.auth import ApiKeys, AuthThrottle
    from sluice.api.metrics import ApiMetrics


class PipelineStatus(TypedDict, total=False):
    """One pipeline's status as the provider reports it (all keys optional but ``name``).

    ``state`` is one of ``starting``, ``running``, ``stopping``, ``stopped``, ``failed``;
    ``lag`` is a number of records or a per-partition mapping; ``source`` is the pipeline's
    source config (``{"type": "log", "stream": "events"}``), which the API reads to know which
    log streams are served; ``tables`` lists the lake tables the pipeline writes.
    """

    name: str
    state: str
    events_total: int
    events_per_second: float
    lag: int | dict[str, int]
    last_checkpoint: str | None
    epoch: int
    errors: int
    last_error: str | None
    restarts: int
    source: dict[str, Any]
    tables: list[str]


class PipelinesProvider(Protocol):
    """The serve runtime as the API sees it.

    ``get``/``start``/``stop`` raise ``sluice.core.errors.NotFoundError`` for an unknown
    name; ``start``/``stop`` return the new status and must not block for long (request
    the change, let the worker thread act on it).
    """

    def list(self) -> list[PipelineStatus]:
        """Status of every pipeline this process serves."""
        ...

    def get(self, name: str) -> PipelineStatus:
        """Status of one pipeline."""
        ...

    def start(self, name: str) -> PipelineStatus:
        """Start (or resume) a pipeline."""
        ...

    def stop(self, name: str) -> PipelineStatus:
        """Stop a pipeline after its current epoch."""
        ...


class QueryEngineLike(Protocol):
    """Read-only SQL over the lake and warehouse (``sluice.storage.query.QueryEngine``)."""

    def query(self, sql: str, limit: int | None = None, max_bytes: int | None = None) -> Any:
        """Run a read-only statement and return a pyarrow Table (at most ``max_bytes``)."""
        ...

    def tables(self) -> list[Any]:
        """The queryable tables (objects with ``name``, ``kind``, ``rows``, ``columns``)."""
        ...


# predict(data, model=None) -> dict | list; raises NotFoundError for an unknown model.
Predictor = Callable[..., Any]
# () -> list of model descriptions (name, version, format, stage, ...).
ModelsProvider = Callable[[], list[dict[str, Any]]]
# () -> list of jobs with their recent runs (empty until orchestration exists).
JobsProvider = Callable[[], list[dict[str, Any]]]


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


@dataclass(frozen=True)
class ApiConfig:
    """Limits and switches of the API (each from the environment variable beside it)."""

    max_body_bytes: int = 10 * 1024 * 1024  # SLUICE_API_MAX_BODY_BYTES
    max_backlog: int = 1_000_000  # SLUICE_API_MAX_BACKLOG: unconsumed records -> 429
    max_items: int = 100_000  # SLUICE_API_MAX_ITEMS: events in one ingest request -> 413
    auto_create_streams: bool = False  # SLUICE_API_AUTO_CREATE_STREAMS=1
    query_timeout: float = 30.0  # SLUICE_API_QUERY_TIMEOUT (seconds)
    query_concurrency: int = 4  # SLUICE_API_QUERY_CONCURRENCY: queries at once, then 429
    max_result_bytes: int = 16 * 1024 * 1024  # SLUICE_API_MAX_RESULT_BYTES: bigger -> 413
    retry_after: int = 1  # seconds suggested in Retry-After when backpressure applies
    # SLUICE_API_PREDICT_IN_THREAD=0: run every prediction on the event loop (a large body
    # then stalls every other request). By default only a small body for a model that last
    # answered within 1 ms runs there; the others run in a worker thread.
    predict_in_thread: bool = True
    # SLUICE_API_AUTH_FAILURES: invalid keys a client address may send per minute (then 429)
    auth_failures_per_minute: int = 10

    @classmethod
    def from_env(cls) -> ApiConfig:
        """Read the limits from ``SLUICE_API_*`` environment variables."""
        env = os.environ
        return cls(
            max_body_bytes=_env_int("SLUICE_API_MAX_BODY_BYTES", cls.max_body_bytes),
            max_backlog=_env_int("SLUICE_API_MAX_BACKLOG", cls.max_backlog),
            max_items=_env_int("SLUICE_API_MAX_ITEMS", cls.max_items),
            auto_create_streams=env.get("SLUICE_API_AUTO_CREATE_STREAMS", "") in {"1", "true"},
            query_timeout=float(env.get("SLUICE_API_QUERY_TIMEOUT") or cls.query_timeout),
            query_concurrency=_env_int("SLUICE_API_QUERY_CONCURRENCY", cls.query_concurrency),
            max_result_bytes=_env_int("SLUICE_API_MAX_RESULT_BYTES", cls.max_result_bytes),
            predict_in_thread=env.get("SLUICE_API_PREDICT_IN_THREAD", "1") not in {"0", "false"},
            auth_failures_per_minute=_env_int(
                "SLUICE_API_AUTH_FAILURES", cls.auth_failures_per_minute
            ),
        )


@dataclass
class AppState:
    """Everything the routes share, stored on ``app.state.sluice``."""

    settings: Settings
    config: ApiConfig
    log: EmbeddedLog
    keys: ApiKeys
    metrics: ApiMetrics
    auth_throttle: AuthThrottle
    pipelines: PipelinesProvider | None = None
    predictor: Predictor | None = None
    models_provider: ModelsProvider | None = None
    jobs_provider: JobsProvider | None = None
    query_engine_factory: Callable[[Settings], QueryEngineLike] | None = None
    query_pool: QueryPool | None = field(default=None, repr=False)
    # seconds of the last prediction per requested model name (None: the default model)
    predict_seconds: dict[str | None, float] = field(default_factory=dict, repr=False)
    _engine: QueryEngineLike | None = field(default=None, repr=False)
    _engine_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if self.query_pool is None:
            self.query_pool = QueryPool(self.config.query_concurrency, self.config.retry_after)

    def engine(self) -> QueryEngineLike:
        """The query engine, created on first use."""
        with self._engine_lock:
            if self._engine is None:
                factory = self.query_engine_factory or _default_query_engine
                self._engine = factory(self.settings)
            return self._engine

    def served_streams(self) -> set[str]:
        """Log streams read by a served pipeline's ``type: log`` source."""
        if self.pipelines is None:
            return set()
        streams = set()
        for status in self.pipelines.list():
            source = status.get("source") or {}
            if source.get("type") == "log" and isinstance(source.get("stream"), str):
                streams.add(source["stream"])
        return streams


def _default_query_engine(settings: Settings) -> QueryEngineLike:
    from sluice.storage.query import QueryEngine  # type: ignore[import-not-found,unused-ignore]

    engine: QueryEngineLike = QueryEngine(settings)
    return engine


async def get_state(request: Request) -> AppState:
    """The app's shared state (a FastAPI dependency)."""
    state: AppState = request.app.state.sluice
    return state
