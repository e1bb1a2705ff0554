"""Every registered model type: state round-trip, determinism, empty batch, pure build, and for
online models batch invariance (learning in 1 batch or in N gives the same outputs)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from sluice.config.loader import load_pipeline
from sluice.config.models import ModelConfig
from sluice.core.settings import Settings
from sluice.models.base import Model, ModelContext, build_model
from sluice.runners.create import run
from sluice.storage.lake_tables import open_delta
from tests.conformance.conftest import (
    MODELS,
    PIPELINE,
    REGISTERED_MODELS,
    ModelCase,
    model_table,
    no_io,
    table_entry,
)

TABLE = model_table()


@pytest.fixture(params=REGISTERED_MODELS)
def model_config(request: pytest.FixtureRequest, settings: Settings) -> ModelConfig:
    """The config of a minimal instance (its artifact written under the model directory)."""
    name = request.param
    case: ModelCase = table_entry(MODELS, name, "model")
    if case.unavailable and "construction" not in request.node.name:
        pytest.skip(f"{name}: {case.unavailable}")
    settings.models_dir.mkdir(parents=True, exist_ok=True)
    options = case.options(settings.models_dir)
    return ModelConfig.model_validate({"name": "m", "type": name, **options})


def started(config: ModelConfig, settings: Settings) -> Model:
    """A fresh, started instance."""
    model = build_model(config, ModelContext(PIPELINE, settings))
    model.start()
    return model


def outputs(table: pa.Table) -> dict[str, list[Any]]:
    """The columns a model added."""
    added = [c for c in table.column_names if c.startswith("m_")]
    assert added, "the model added no output column"
    return {c: table[c].to_pylist() for c in added}


def assert_close(got: dict[str, list[Any]], want: dict[str, list[Any]], rel: float = 0.0) -> None:
    """Equal outputs; floats exactly or to ``rel`` (NaN where NaN)."""
    assert got.keys() == want.keys()
    for column, values in want.items():
        if values and all(isinstance(v, float) for v in values):
            assert got[column] == pytest.approx(values, rel=rel, abs=rel, nan_ok=True), column
        else:
            assert got[column] == values, column


def test_state_round_trips_into_a_fresh_instance(
    model_config: ModelConfig, settings: Settings
) -> None:
    first = started(model_config, settings)
    first.score(TABLE.slice(0, 120))
    blob = first.state()
    second = started(model_config, settings)
    if blob is not None:
        second.restore(blob)
    assert_close(outputs(second.score(TABLE.slice(120))), outputs(first.score(TABLE.slice(120))))
    first.close()
    second.close()


def test_the_same_input_gives_the_same_outputs(
    model_config: ModelConfig, settings: Settings
) -> None:
    one, two = started(model_config, settings), started(model_config, settings)
    assert_close(outputs(one.score(TABLE)), outputs(two.score(TABLE)))
    if not one.online:  # a stateless model also answers the same twice
        assert_close(outputs(one.score(TABLE)), outputs(two.score(TABLE)))
    one.close()
    two.close()


def test_an_empty_batch_scores_to_an_empty_batch(
    model_config: ModelConfig, settings: Settings
) -> None:
    model = started(model_config, settings)
    scored = model.score(TABLE.slice(0, 0))
    assert scored.num_rows == 0
    assert set(TABLE.column_names) <= set(scored.column_names)
    model.close()


def test_learning_in_one_batch_or_many_gives_the_same_outputs(
    model_config: ModelConfig, settings: Settings
) -> None:
    whole = started(model_config, settings)
    if not whole.online:
        whole.close()
        return  # a batch model learns nothing while scoring: invariance is trivial
    pieces = started(model_config, settings)
    cuts = [0, 1, 17, 64, 65, 150, TABLE.num_rows]
    scored = [pieces.score(TABLE.slice(a, b - a)) for a, b in itertools.pairwise(cuts)]
    # Floats may differ in the last bits (vectorised sums run in another order); flags,
    # labels and reasons must be identical.
    assert_close(outputs(pa.concat_tables(scored)), outputs(whole.score(TABLE)), rel=1e-9)
    whole.close()
    pieces.close()


def test_construction_does_no_io_and_close_without_start_is_harmless(
    model_config: ModelConfig, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with no_io(tmp_path, monkeypatch):
        model = build_model(model_config, ModelContext(PIPELINE, settings))
        model.close()
        model.close()


# -- online models through the runner -------------------------------------------------------
def write_part(folder: Path, first: int, stop: int) -> None:
    """Rows ``first..stop`` of the model table (with an ``id``) as one JSON-lines file."""
    rows = TABLE.slice(first, stop - first).to_pylist()
    lines = [json.dumps({"id": first + i, **row}) for i, row in enumerate(rows)]
    (folder / f"part-{first:04d}.jsonl").write_text("\n".join(lines) + "\n")


def run_online(
    config: ModelConfig, folder: Path, name: str, max_rows: int, settings: Settings
) -> list[dict[str, Any]]:
    """Run a file → model → lake pipeline until idle; the lake's rows by id."""
    spec = {
        "name": name,
        "source": {"type": "file", "path": str(folder / "*.jsonl"), "format": "json"},
        "schema": {"id": "long", "device": "string", "a": "double", "b": "double", "c": "double"},
        "models": [config.model_dump(exclude_none=True)],
        "batch": {"max_rows": max_rows, "max_latency": "100ms"},
        "sinks": [{"type": "lake", "table": name, "partition_by": "none"}],
    }
    file = folder.parent / f"{name}.yaml"
    file.write_text(json.dumps(spec))
    run(load_pipeline(file), settings, until_idle=True)
    delta = open_delta(settings.lake_path(name))
    assert delta is not None
    return sorted(delta.to_pyarrow_table().to_pylist(), key=lambda row: row["id"])


def by_column(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """The model's output columns of ``rows``."""
    return {c: [row[c] for row in rows] for c in rows[0] if c.startswith("m_")}


def test_an_online_model_in_the_runner_gives_the_same_outputs_however_epochs_are_cut(
    model_config: ModelConfig, settings: Settings, tmp_path: Path
) -> None:
    """One epoch, many epochs, and a restart between two runs (state from the checkpoint)."""
    if not build_model(model_config, ModelContext(PIPELINE, settings)).online:
        return  # batch models learn nothing in the runner: covered by determinism
    whole, pieces, restarted = (tmp_path / n for n in ("whole", "pieces", "restarted"))
    for folder in (whole, pieces, restarted):
        folder.mkdir()
    for folder in (whole, pieces):
        write_part(folder, 0, TABLE.num_rows)
    expected = by_column(run_online(model_config, whole, "whole", 10_000, settings))
    assert_close(
        by_column(run_online(model_config, pieces, "pieces", 7, settings)), expected, rel=1e-9
    )
    write_part(restarted, 0, 100)
    run_online(model_config, restarted, "restarted", 10_000, settings)
    write_part(restarted, 100, TABLE.num_rows)
    after = by_column(run_online(model_config, restarted, "restarted", 10_000, settings))
    assert_close(after, expected, rel=1e-9)
