"""Lazy import of optional dependencies with an error that names the pip extra."""

from __future__ import annotations

import importlib
from types import ModuleType

from sluice.core.errors import MissingDependencyError


def require(module: str, extra: str, feature: str = "") -> ModuleType:
    """Import ``module`` or raise MissingDependencyError naming ``pip install "sluice[extra]"``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(module.split(".")[0], extra, feature) from exc
