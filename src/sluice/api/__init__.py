"""Sluice's REST API and dashboard (FastAPI): ``create_app(settings, ...)``."""

from sluice.api.app import create_app
from sluice.api.auth import ApiKeys, check_bind, hash_key
from sluice.api.deps import ApiConfig, PipelinesProvider, PipelineStatus

__all__ = [
    "ApiConfig",
    "ApiKeys",
    "PipelineStatus",
    "PipelinesProvider",
    "check_bind",
    "create_app",
    "hash_key",
]
