"""The FastAPI application: ``create_app(settings, ...)`` wires routers, auth and the dashboard."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from sluice.api.auth import ApiKeys, AuthThrottle
from sluice.api.deps import (
    ApiConfig,
    AppState,
    JobsProvider,
    ModelsProvider,
    PipelinesProvider,
    Predictor,
    QueryEngineLike,
)
from sluice.api.docs import install_docs
from sluice.api.errors import ERROR_RESPONSES, install_error_handlers
from sluice.api.guard import KeylessGuard
from sluice.api.metrics import ApiMetrics
from sluice.api.routes import automation, data, ingest, insights, ops, pipelines, predict
from sluice.core.settings import Settings
from sluice.storage.log import open_log

STATIC_DIR = Path(__file__).parent / "static"


def create_app(
    settings: Settings,
    *,
    pipelines_provider: PipelinesProvider | None = None,
    predictor: Predictor | None = None,
    api_keys: ApiKeys | None = None,
    models_provider: ModelsProvider | None = None,
    jobs_provider: JobsProvider | None = None,
    config: ApiConfig | None = None,
    query_engine_factory: Callable[[Settings], QueryEngineLike] | None = None,
) -> FastAPI:
    """Build the Sluice API for ``settings``; keys default to the environment's."""
    app = FastAPI(
        title="Sluice API",
        version="1",
        docs_url=None,  # served below from packaged assets: /docs works offline
        redoc_url=None,
        description="Ingest events, query the lake, predict, and watch pipelines.",
    )
    provider = pipelines_provider
    config = config or ApiConfig.from_env()
    app.state.sluice = AppState(
        settings=settings,
        config=config,
        log=open_log(settings.log_dir),
        keys=api_keys if api_keys is not None else ApiKeys.from_env(),
        metrics=ApiMetrics(lambda: provider.list() if provider is not None else []),
        auth_throttle=AuthThrottle(config.auth_failures_per_minute),
        pipelines=pipelines_provider,
        predictor=predictor,
        models_provider=models_provider,
        jobs_provider=jobs_provider,
        query_engine_factory=query_engine_factory,
    )
    install_error_handlers(app)
    app.add_middleware(KeylessGuard, keys_configured=lambda: bool(app.state.sluice.keys))
    for module in (ingest, predict, pipelines, data, ops, automation, insights):
        app.include_router(module.router, responses=ERROR_RESPONSES)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    install_docs(app)

    @app.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        """The dashboard page (it reads everything else from the API)."""
        return FileResponse(STATIC_DIR / "index.html")

    return app
