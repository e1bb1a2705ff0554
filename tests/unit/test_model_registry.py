"""Model registry: register, promote, rollback, path confinement."""

from __future__ import annotations

from pathlib import Path

import pytest

from sluice.core.errors import ModelError, NotFoundError
from sluice.models.registry import ModelRegistry


def _artifact(tmp_path: Path, name: str = "m.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(b"weights")
    return path


def test_versions_promote_and_rollback(settings, tmp_path: Path) -> None:
    reg = ModelRegistry(settings)
    v1 = reg.register(
        "clf", "sklearn", _artifact(tmp_path), features=["a", "b"], metrics={"f1": 0.8}
    )
    v2 = reg.register(
        "clf", "sklearn", _artifact(tmp_path), features=["a", "b"], metrics={"f1": 0.9}
    )
    assert (v1.version, v2.version) == (1, 2)
    assert v1.stage == v2.stage == "candidate"
    assert reg.production("clf") is None
    reg.promote("clf", 1)
    reg.promote("clf", 2)
    assert reg.production("clf").version == 2  # type: ignore[union-attr]
    assert reg.get("clf", 1).stage == "archived"
    back = reg.rollback("clf")
    assert back.version == 1 and back.stage == "production"
    assert reg.get("clf", 2).stage == "candidate"
    assert (settings.models_dir / "clf" / "v2" / "m.bin").read_bytes() == b"weights"
    assert reg.get("clf", 2).metrics == {"f1": 0.9}


def test_rollback_without_history_is_a_clear_error(settings, tmp_path: Path) -> None:
    reg = ModelRegistry(settings)
    reg.register("solo", "sklearn", _artifact(tmp_path), features=["a"], stage="production")
    with pytest.raises(ModelError, match="no earlier production version"):
        reg.rollback("solo")


def test_unknown_model_and_version(settings) -> None:
    reg = ModelRegistry(settings)
    with pytest.raises(NotFoundError, match="no model named"):
        reg.get("nope")


def test_invalid_names_and_paths_outside_model_dir(settings, tmp_path: Path) -> None:
    reg = ModelRegistry(settings)
    with pytest.raises(ModelError, match="invalid model name"):
        reg.register("../evil", "sklearn", _artifact(tmp_path), features=[])
    outside = _artifact(tmp_path, "outside.joblib")
    with pytest.raises(ModelError, match="outside the model directory"):
        reg.resolve_artifact(outside)
    with pytest.raises(ModelError, match="outside the model directory"):
        reg.resolve_artifact("../../outside.joblib")
