"""Find implementations by name: built-ins first, then ``sluice.<group>`` entry points."""

from __future__ import annotations

import importlib
from functools import cache
from importlib.metadata import entry_points
from typing import Any

from sluice.core.errors import ConfigError


def _import(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


@cache
def _entry_points(group: str) -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=f"sluice.{group}")}


def load_plugin(group: str, name: str, builtins: dict[str, str]) -> Any:
    """Return the class registered as ``name`` in ``group`` (e.g. ``sources``/``file``)."""
    if name in builtins:
        return _import(builtins[name])
    eps = _entry_points(group)
    if name in eps:
        return eps[name].load()
    known = sorted(set(builtins) | set(eps))
    raise ConfigError(
        f"unknown {group[:-1]} type {name!r}; available: {', '.join(known)}", key="type"
    )


def available(group: str, builtins: dict[str, str]) -> list[str]:
    """Names of every implementation in ``group``."""
    return sorted(set(builtins) | set(_entry_points(group)))
