"""Shared fixtures: an isolated SLUICE_HOME per test, service discovery rules."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from sluice.core.settings import Settings

from tests.kafka_broker import (  # noqa: F401 - fixtures
    durable_kafka_broker_fixture,
    kafka_broker_fixture,
    moto_s3_server_fixture,
)

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_service(available: bool, what: str) -> None:
    """Skip locally when a service is missing; fail under CI=true (it must be there)."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"{what} is required in CI but is not available")
    pytest.skip(f"{what} is not available")


@pytest.fixture
def sluice_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh SLUICE_HOME for one test (and no leaked global engines)."""
    from sluice.storage.db import dispose_all

    home = tmp_path / "home"
    monkeypatch.setenv("SLUICE_HOME", str(home))
    for var in ("SLUICE_METADATA_URL", "SLUICE_LAKE_URL", "SLUICE_WAREHOUSE_URL"):
        monkeypatch.delenv(var, raising=False)
    yield home
    dispose_all()


@pytest.fixture
def settings(sluice_home: Path) -> Settings:
    """Settings rooted at the test's SLUICE_HOME."""
    from sluice.core.settings import Settings

    return Settings(home=sluice_home)
