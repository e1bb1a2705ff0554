"""``sluice serve``: the API, the scheduler, log retention and the pipelines in one process."""

from __future__ import annotations

import contextlib
import errno
import logging
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sluice.api.app import create_app
from sluice.api.auth import ApiKeys, check_bind
from sluice.config.loader import load_pipeline
from sluice.core.errors import ConfigError
from sluice.core.settings import Settings
from sluice.models.predict import Predictor
from sluice.models.registry import ModelRegistry, OnlineModelIndex
from sluice.orchestration.service import job_runner, jobs_provider, start_scheduler
from sluice.runners.prepare import RecordPreparer
from sluice.runners.supervisor import PipelineSupervisor
from sluice.storage.log import open_log
from sluice.storage.log_retention import LogRetention, RetentionPolicy

log = logging.getLogger("sluice.serve")


def models_provider(settings: Settings) -> Any:
    """A callable listing registry versions and online models for the API."""

    def provide() -> list[dict[str, Any]]:
        out = [v.as_dict() for v in ModelRegistry(settings).list()]
        out += [
            {
                "name": m.name,
                "version": None,
                "stage": "online",
                "format": m.type,
                "features": m.features,
                "pipeline": m.pipeline,
            }
            for m in OnlineModelIndex(settings).list()
        ]
        return out

    return provide


def build_service(
    settings: Settings, pipeline_files: list[Path], *, group: str | None = None
) -> tuple[Any, PipelineSupervisor]:
    """The FastAPI app wired to a supervisor of ``pipeline_files`` and the model registry."""
    pipelines = [load_pipeline(path) for path in pipeline_files]
    supervisor = PipelineSupervisor(
        pipelines, settings, group=group, job_runner=job_runner(settings)
    )
    predictor = Predictor(settings, prepare=RecordPreparer(settings))
    extra = jobs_provider(settings)
    app = create_app(
        settings,
        pipelines_provider=supervisor,  # type: ignore[arg-type]
        predictor=predictor.predict,
        models_provider=models_provider(settings),
        jobs_provider=extra,
    )
    return app, supervisor


def _graceful_server_class() -> Any:
    import uvicorn

    class GracefulServer(uvicorn.Server):
        """Shuts down on SIGTERM/SIGINT and exits 0 (uvicorn re-raises the signal)."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            previous = {
                sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)
            }
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return GracefulServer


def _GracefulServer(config: Any) -> Any:  # noqa: N802 - a factory standing for the class
    return _graceful_server_class()(config)


def check_port_free(host: str, port: int) -> None:
    """Fail with one clear line when ``host:port`` cannot be bound (in use, or not allowed)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            why = (
                "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be used ({exc.strerror})"
            )
            raise ConfigError(f"port {port} on {host} {why}; choose another with --port") from None


def serve(
    settings: Settings,
    pipeline_files: list[Path],
    *,
    host: str = "127.0.0.1",
    port: int = 5000,
    group: str | None = None,
    on_ready: Any = None,
) -> None:
    """Serve until SIGTERM/Ctrl-C; then stop pipelines after their epoch and exit."""
    import uvicorn

    check_bind(host, ApiKeys.from_env())
    check_port_free(host, port)
    retention_policy = RetentionPolicy.from_env()  # a bad setting fails before anything starts
    app, supervisor = build_service(settings, pipeline_files, group=group)
    supervisor.start_all()
    scheduler = start_scheduler(settings)
    retention = LogRetention(open_log(settings.log_dir), retention_policy)
    retention.start()
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    server = _GracefulServer(config)
    if on_ready is not None:
        on_ready(f"http://{host}:{port}")
    try:
        server.run()
    finally:
        log.info("stopping pipelines")
        supervisor.stop_all()
        retention.stop()
        if scheduler is not None:
            scheduler[1].set()
            scheduler[2].join(timeout=60)
