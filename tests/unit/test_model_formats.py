"""Batch model formats: load, score, wrong feature counts, corrupt files, hot reload."""

from __future__ import annotations

import warnings
from pathlib import Path

import joblib
import numpy as np
import pyarrow as pa
import pytest
from sklearn.ensemble import IsolationForest
from sklearn.linear_model import LogisticRegression

from sluice.config.models import ModelConfig
from sluice.core.errors import ModelError
from sluice.models.base import ModelContext, create_model
from sluice.models.registry import ModelRegistry

RNG = np.random.default_rng(0)
X = RNG.normal(size=(400, 3))
Y = np.where(X[:, 0] + X[:, 1] > 0, "high", "low")
TABLE = pa.table({"a": X[:, 0], "b": X[:, 1], "c": X[:, 2]})


def _register_sklearn(settings, tmp_path: Path, estimator, name: str = "clf") -> None:
    path = tmp_path / "model.joblib"
    joblib.dump(estimator, path)
    ModelRegistry(settings).register(
        name, "sklearn", path, features=["a", "b", "c"], stage="production"
    )


def _model(settings, **kw):
    config = ModelConfig(**{"name": "clf", "type": "sklearn", "features": ["a", "b", "c"], **kw})
    return create_model(config, ModelContext("p", settings))


def test_sklearn_classifier_adds_label_proba_reason(settings, tmp_path: Path) -> None:
    _register_sklearn(settings, tmp_path, LogisticRegression().fit(X, Y))
    out = _model(settings).score(TABLE)
    labels = out.column("clf_label").to_pylist()
    assert set(labels) == {"high", "low"}
    assert np.mean(np.array(labels) == Y) > 0.95
    proba = out.column("clf_proba").to_numpy()
    assert ((proba >= 0.5) & (proba <= 1)).all()
    assert out.column("clf_reason")[0].as_py().startswith("predicted ")


def test_isolation_forest_flags_outliers(settings, tmp_path: Path) -> None:
    _register_sklearn(settings, tmp_path, IsolationForest(random_state=0).fit(X), "iso")
    table = pa.table({"a": [0.0, 9.0], "b": [0.0, -9.0], "c": [0.0, 9.0]})
    out = _model(settings, name="iso", threshold=0.6).score(table)
    assert out.column("iso_anomaly").to_pylist() == [False, True]
    assert out.column("iso_score")[1].as_py() > out.column("iso_score")[0].as_py()


def test_wrong_feature_count_fails_at_load(settings, tmp_path: Path) -> None:
    _register_sklearn(settings, tmp_path, LogisticRegression().fit(X[:, :2], Y))
    with pytest.raises(ModelError, match="expects 2 feature"):
        _model(settings)


def test_corrupt_file_fails_at_load(settings, tmp_path: Path) -> None:
    path = tmp_path / "model.joblib"
    path.write_bytes(b"not a pickle at all")
    ModelRegistry(settings).register(
        "clf", "sklearn", path, features=["a", "b", "c"], stage="production"
    )
    with pytest.raises(ModelError, match="cannot load"):
        _model(settings)


def test_path_must_be_under_model_dir(settings, tmp_path: Path) -> None:
    path = tmp_path / "model.joblib"
    joblib.dump(LogisticRegression().fit(X, Y), path)
    with pytest.raises(ModelError, match="outside the model directory"):
        _model(settings, path=str(path))


def test_hot_reload_picks_up_promoted_version(settings, tmp_path: Path) -> None:
    _register_sklearn(settings, tmp_path, LogisticRegression().fit(X, Y))
    model = _model(settings)
    assert model.refresh() is False
    flipped = np.where(Y == "high", "low", "high")
    path = tmp_path / "v2.joblib"
    joblib.dump(LogisticRegression().fit(X, flipped), path)
    reg = ModelRegistry(settings)
    v2 = reg.register("clf", "sklearn", path, features=["a", "b", "c"])
    assert model.refresh() is False  # a candidate is not picked up
    reg.promote("clf", v2.version)
    assert model.refresh() is True
    labels = np.array(model.score(TABLE).column("clf_label").to_pylist())
    assert np.mean(labels == flipped) > 0.95


def test_onnx_model_matches_sklearn(settings, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from skl2onnx import to_onnx

    est = LogisticRegression().fit(X.astype(np.float32), Y)
    onx = to_onnx(est, X[:1].astype(np.float32), options={id(est): {"zipmap": False}})
    path = settings.models_dir / "clf.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(onx.SerializeToString())
    model = _model(settings, type="onnx", path="clf.onnx")
    out = model.score(TABLE)
    assert out.column("clf_label").to_pylist() == list(est.predict(X.astype(np.float32)))
    np.testing.assert_allclose(
        out.column("clf_proba").to_numpy(),
        est.predict_proba(X.astype(np.float32)).max(axis=1),
        rtol=1e-4,
    )


def test_onnx_wrong_feature_count(settings, tmp_path: Path) -> None:
    from skl2onnx import to_onnx

    est = LogisticRegression().fit(X[:, :2].astype(np.float32), Y)
    onx = to_onnx(est, X[:1, :2].astype(np.float32), options={id(est): {"zipmap": False}})
    path = settings.models_dir / "two.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(onx.SerializeToString())
    with pytest.raises(ModelError, match="expects 2 feature"):
        _model(settings, type="onnx", path="two.onnx")


def test_torchscript_model(settings) -> None:
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def forward(self, x):  # type: ignore[no-untyped-def]
            return torch.stack([x[:, 0] + x[:, 1], -(x[:, 0] + x[:, 1])], dim=1)

    settings.models_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(Net()).save(str(settings.models_dir / "net.pt"))
    example = torch.zeros(4, 3)
    program = torch.export.export(
        Net(), (example,), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    torch.export.save(program, str(settings.models_dir / "net.pt2"))
    for name in ("net.pt", "net.pt2"):
        model = _model(settings, type="torch", path=name, classes=["high", "low"])
        labels = np.array(model.score(TABLE).column("clf_label").to_pylist())
        assert np.mean(labels == Y) == 1.0


def test_model_error_at_inference_dead_letters_the_batch(settings, tmp_path: Path) -> None:
    from sluice.config.models import Pipeline
    from sluice.core.context import EpochContext
    from sluice.runners.stages import Stages
    from sluice.sources.base import SourceBatch

    _register_sklearn(settings, tmp_path, LogisticRegression().fit(X, Y))
    pipeline = Pipeline(
        name="p",
        source={"type": "generator"},
        models=[{"name": "clf", "type": "sklearn", "features": ["a", "b", "c"]}],
    )
    stages = Stages(pipeline, settings)
    stages.start()  # building opens nothing: the model is loaded by start()
    bad = pa.table({"a": [1.0], "b": [2.0], "c": ["not numeric"]})
    ctx = EpochContext("p", 1)
    out, _ = stages.run(SourceBatch(bad, "arrow", {}), ctx)
    assert out.num_rows == 0
    assert ctx.dead_letter_count == 1
    rejected = ctx.dead_letters[0]
    assert rejected.column("stage")[0].as_py() == "model:clf"
    assert "not numeric" in rejected.column("raw")[0].as_py()
    good, _ = stages.run(SourceBatch(TABLE, "arrow", {}), EpochContext("p", 2))
    assert good.num_rows == TABLE.num_rows
    stages.close()
