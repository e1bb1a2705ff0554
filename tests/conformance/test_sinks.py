"""Every registered sink (each backend variant): idempotent epochs, empty batches, pure build."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from sluice.config.models import SinkConfig
from sluice.core.settings import Settings
from sluice.sinks.base import Sink, SinkContext, create_sink
from tests.conformance.conftest import (
    PIPELINE,
    REGISTERED_SINKS,
    SINK_VARIANTS,
    SINKS,
    SinkCase,
    no_io,
    services_for,
    table_entry,
)

VARIANTS = [(name, needs) for name in REGISTERED_SINKS for needs in SINK_VARIANTS.get(name, ((),))]
IDS = [name + "".join(f"[{n}]" for n in needs) for name, needs in VARIANTS]
BATCH = pa.table({"id": pa.array(range(5), pa.int64()), "v": [i / 2 for i in range(5)]})


@pytest.fixture(params=VARIANTS, ids=IDS)
def case(request: pytest.FixtureRequest, sluice_home: Path) -> SinkCase:
    """The sink under test on its backend."""
    name, needs = request.param
    factory = table_entry(SINKS, name, "sink")
    return factory(sluice_home, services_for(request, needs))


def build(case: SinkCase, settings: Settings) -> Sink:
    """A fresh sink instance."""
    return create_sink(SinkConfig.model_validate(case.config), SinkContext(PIPELINE, settings))


def test_writing_an_epoch_twice_lands_it_once(case: SinkCase, settings: Settings) -> None:
    sink = build(case, settings)
    try:
        assert sink.write(BATCH, 1) is True
        assert sink.write(BATCH, 1) is False
        assert sink.write(BATCH, {PIPELINE: 1}) is False
    finally:
        sink.close()
    restarted = build(case, settings)
    try:
        if restarted.exactly_once:
            assert restarted.write(BATCH, 1) is False
            assert case.count() == BATCH.num_rows
        assert restarted.write(BATCH, 2) is True
    finally:
        restarted.close()


def test_an_empty_batch_writes_nothing_and_later_epochs_still_land(
    case: SinkCase, settings: Settings
) -> None:
    sink = build(case, settings)
    try:
        assert sink.write(BATCH.slice(0, 0), 1) in (True, False)
        assert case.count() == 0
        assert sink.write(BATCH, 2) is True
        assert case.count() == BATCH.num_rows
    finally:
        sink.close()


def test_close_without_a_write_and_twice_is_harmless(case: SinkCase, settings: Settings) -> None:
    build(case, settings).close()
    sink = build(case, settings)
    sink.write(BATCH, 1)
    sink.close()
    sink.close()


def test_construction_does_no_io(
    case: SinkCase, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with no_io(tmp_path, monkeypatch):
        build(case, settings)
