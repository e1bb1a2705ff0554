"""Every registered plugin name loads, is of its layer's protocol and declares its flags."""

from __future__ import annotations

from importlib.metadata import entry_points

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


def test_an_unknown_name_says_what_is_available() -> None:
    with pytest.raises(ConfigError, match="unknown source type 'mqtt'; available: file") as err:
        load_plugin("sources", "mqtt", BUILTIN_SOURCES)
    assert err.value.key == "type"
