"""Every registered plugin has an entry in the conformance table, so none escapes the checks."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conformance.conftest import (
    MODELS,
    REGISTERED_MODELS,
    REGISTERED_SINKS,
    REGISTERED_SOURCES,
    SINKS,
    SOURCES,
    table_entry,
)

KINDS: dict[str, tuple[list[str], dict[str, Any]]] = {
    "source": (REGISTERED_SOURCES, SOURCES),
    "sink": (REGISTERED_SINKS, SINKS),
    "model": (REGISTERED_MODELS, MODELS),
}
PLUGINS = [(kind, name) for kind, (names, _) in KINDS.items() for name in names]


@pytest.mark.parametrize(("kind", "name"), PLUGINS, ids=[f"{k}:{n}" for k, n in PLUGINS])
def test_every_registered_plugin_has_a_conformance_entry(kind: str, name: str) -> None:
    table_entry(KINDS[kind][1], name, kind)


def test_the_table_names_no_plugin_that_is_not_registered() -> None:
    for names, table in KINDS.values():
        assert set(table) <= set(names), sorted(set(table) - set(names))


def test_a_plugin_without_an_entry_fails_with_what_to_add() -> None:
    with pytest.raises(pytest.fail.Exception, match=r"no entry in tests/conformance/conftest\.py"):
        table_entry(SOURCES, "nosuch", "source")
