"""Every registered plugin name loads, is of its layer's protocol and declares its flags."""

from __future__ import annotations

import tomllib
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from sluice.actions.base import BUILTIN_ACTIONS, Action
from sluice.core.errors import ConfigError
from sluice.core.plugins import available, load_plugin
from sluice.models.base import BUILTIN_MODELS, Model
from sluice.sinks.base import BUILTIN_SINKS, Sink
from sluice.sources.base import BUILTIN_SOURCES, PartitionedSource, Source

GROUPS = {
    "sources": (BUILTIN_SOURCES, Source),
    "sinks": (BUILTIN_SINKS, Sink),
    "models": (BUILTIN_MODELS, Model),
    "actions": (BUILTIN_ACTIONS, Action),
}
REGISTERED = [
    (group, name) for group, (builtins, _) in GROUPS.items() for name in available(group, builtins)
]


@pytest.mark.parametrize(("group", "name"), REGISTERED, ids=[f"{g}:{n}" for g, n in REGISTERED])
def test_every_registered_name_loads(group: str, name: str) -> None:
    builtins, protocol = GROUPS[group]
    cls = load_plugin(group, name, builtins)
    assert isinstance(cls, type) and issubclass(cls, protocol)
    if group == "sources":
        assert isinstance(cls.prefetch_safe, bool)
        assert cls.partitioned == issubclass(cls, PartitionedSource)


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_every_entry_point_loads(group: str) -> None:
    for entry in entry_points(group=f"sluice.{group}"):
        assert issubclass(entry.load(), GROUPS[group][1]), entry


def declared_entry_points() -> list[tuple[str, str, str]]:
    """``(group, name, target)`` of every ``sluice.*`` entry point in pyproject.toml."""
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    groups = tomllib.loads(pyproject.read_text())["project"].get("entry-points", {})
    return [
        (group, name, target)
        for group, table in groups.items()
        if group.startswith("sluice.")
        for name, target in table.items()
    ]


DECLARED = declared_entry_points()


@pytest.mark.parametrize(
    ("group", "name", "target"), DECLARED, ids=[f"{g}:{n}" for g, n, _ in DECLARED]
)
def test_every_entry_point_declared_in_pyproject_loads(group: str, name: str, target: str) -> None:
    """Read from the source tree, so a dangling registration fails before any install."""
    layer = group.removeprefix("sluice.")
    assert layer in GROUPS, f"entry-point group {group!r} has no plugin layer"
    builtins, protocol = GROUPS[layer]
    cls = load_plugin(layer, name, {name: target})
    assert isinstance(cls, type) and issubclass(cls, protocol), target
    assert load_plugin(layer, name, builtins) is cls, f"{group}:{name} disagrees with the built-ins"


def test_pyproject_declares_entry_points() -> None:
    assert any(group == "sluice.sources" for group, _, _ in DECLARED)


def test_an_unknown_name_says_what_is_available() -> None:
    with pytest.raises(ConfigError, match="unknown source type 'nosuch'; available: file") as err:
        load_plugin("sources", "nosuch", BUILTIN_SOURCES)
    assert err.value.key == "type"
