"""TensorFlow SavedModel directories (``type: tensorflow``); runs where ``tensorflow-cpu`` is.

Not in the default CI (TensorFlow is a large install): ``pip install "sluice[tensorflow]"``
then ``pytest -m tensorflow``. Without TensorFlow, only the missing-extra message is checked.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from sluice.config.models import ModelConfig
from sluice.core.errors import MissingDependencyError, ModelError
from sluice.models.base import Model, ModelContext, create_model
from sluice.models.semantics import softmax

pytestmark = pytest.mark.tensorflow
HAS_TF = importlib.util.find_spec("tensorflow") is not None
needs_tf = pytest.mark.skipif(not HAS_TF, reason='needs pip install "sluice[tensorflow]"')

X32 = np.random.default_rng(3).normal(size=(200, 3)).astype(np.float32)
TABLE = pa.table({f"x{i}": X32[:, i].astype(np.float64) for i in range(3)})
FEATURES = ["x0", "x1", "x2"]


def _model(settings: Any, path: str, **options: Any) -> Model:
    config = ModelConfig(name="m", type="tensorflow", features=FEATURES, path=path, **options)
    return create_model(config, ModelContext("p", settings))


def _saved_model(directory: Path, final: str, units: int = 3) -> Any:
    """A seeded SavedModel with ``serving_default`` and ``raw`` signatures; returns it loaded."""
    import tensorflow as tf

    class Net(tf.Module):
        def __init__(self) -> None:
            self.w = tf.Variable(tf.random.stateless_normal((3, units), seed=(1, 2)))

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32)])
        def serve(self, x: Any) -> Any:
            z = tf.matmul(x, self.w)
            out = {"softmax": tf.nn.softmax, "sigmoid": tf.sigmoid, "linear": tf.identity}[final]
            return {"out": out(z)}

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32)])
        def raw(self, x: Any) -> Any:
            return {"logits": tf.matmul(x, self.w), "double": 2.0 * tf.matmul(x, self.w)}

    net = Net()
    tf.saved_model.save(
        net, str(directory), signatures={"serving_default": net.serve, "raw": net.raw}
    )
    return tf.saved_model.load(str(directory))


@pytest.fixture
def models_dir(settings: Any) -> Path:
    settings.models_dir.mkdir(parents=True, exist_ok=True)
    return Path(settings.models_dir)


@needs_tf
def test_final_softmax_gives_exactly_the_signatures_probabilities(
    settings: Any, models_dir: Path
) -> None:
    loaded = _saved_model(models_dir / "soft", "softmax")
    probs = loaded.signatures["serving_default"](x=X32)["out"].numpy()
    out = _model(settings, "soft", labels=["a", "b", "c"]).score(TABLE)
    best = probs.argmax(axis=1)
    assert out.column("m_label").to_pylist() == np.array(["a", "b", "c"])[best].tolist()
    assert out.column("m_proba").to_pylist() == probs[np.arange(200), best].tolist()


@needs_tf
def test_signature_by_name_and_output_by_key(settings: Any, models_dir: Path) -> None:
    loaded = _saved_model(models_dir / "sm", "linear")
    logits = loaded.signatures["raw"](x=X32)["logits"].numpy().astype(np.float64)
    with pytest.raises(ModelError, match="choose one with signature_output"):
        _model(settings, "sm", signature="raw")
    with pytest.raises(ModelError, match="no signature 'nope'"):
        _model(settings, "sm", signature="nope")
    out = _model(settings, "sm", signature="raw", signature_output="logits").score(TABLE)
    probs = softmax(logits)
    np.testing.assert_allclose(out.column("m_proba").to_numpy(), probs.max(axis=1), rtol=1e-12)


@needs_tf
def test_sigmoid_score_and_regression(settings: Any, models_dir: Path) -> None:
    loaded = _saved_model(models_dir / "sig", "sigmoid", units=1)
    p = loaded.signatures["serving_default"](x=X32)["out"].numpy()[:, 0].astype(np.float64)
    out = _model(settings, "sig", labels=["ok", "bad"]).score(TABLE)
    assert out.column("m_label").to_pylist() == np.where(p > 0.5, "bad", "ok").tolist()
    lin = _saved_model(models_dir / "lin", "linear", units=1)
    values = lin.signatures["serving_default"](x=X32)["out"].numpy()[:, 0].astype(np.float64)
    scored = _model(settings, "lin", threshold=0.0).score(TABLE)
    assert scored.column("m_score").to_pylist() == values.tolist()
    assert scored.column("m_anomaly").to_pylist() == (values > 0).tolist()
    regression = _model(settings, "lin", output="regression").score(TABLE)
    assert "m_anomaly" not in regression.column_names
    assert regression.column("m_score").to_pylist() == values.tolist()


@pytest.mark.skipif(HAS_TF, reason="TensorFlow is installed")
def test_without_tensorflow_the_error_names_the_extra(settings: Any, models_dir: Path) -> None:
    (models_dir / "sm").mkdir()
    with pytest.raises(MissingDependencyError, match=r'pip install "sluice\[tensorflow\]"'):
        _model(settings, "sm")
