"""Output semantics per format and per output kind, checked against the framework's own call.

Every model is built here from seeded code; Sluice scores the same rows and its columns must
equal what the framework itself returns (probabilities exactly where the model outputs them).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pyarrow as pa
import pytest
from sklearn.ensemble import IsolationForest
from sklearn.linear_model import LinearRegression, LogisticRegression

from sluice.config.models import ModelConfig
from sluice.core.errors import ConfigError, ModelError
from sluice.models.base import Model, ModelContext, build_model, create_model
from sluice.models.semantics import sigmoid, softmax

RNG = np.random.default_rng(7)
X = RNG.normal(size=(300, 3))
X32 = X.astype(np.float32)
LABELS3 = np.array(["a", "b", "c"])
Y3 = LABELS3[np.argmax(X @ np.array([[1.0, -1.0, 0.2], [0.5, 1.0, -1.0], [-0.3, 0.4, 1.0]]), 1)]
TABLE = pa.table({"x0": X[:, 0], "x1": X[:, 1], "x2": X[:, 2]})
FEATURES = ["x0", "x1", "x2"]


def _model(settings: Any, path: str, type_: str, **options: Any) -> Model:
    config = ModelConfig(name="m", type=type_, features=FEATURES, path=path, **options)
    return create_model(config, ModelContext("p", settings))


def _scored(settings: Any, path: str, type_: str, **options: Any) -> dict[str, np.ndarray]:
    out = _model(settings, path, type_, **options).score(TABLE)
    return {c[2:]: np.asarray(out.column(c).to_pylist()) for c in out.column_names if c[:2] == "m_"}


def _expect_classes(got: dict[str, np.ndarray], probs: np.ndarray, labels: Any) -> None:
    """Label = most likely class, proba = its probability: exactly the given ones."""
    best = probs.argmax(axis=1)
    assert got["label"].tolist() == np.asarray(labels)[best].astype(str).tolist()
    np.testing.assert_array_equal(
        got["proba"], probs[np.arange(len(best)), best].astype(np.float64)
    )
    assert "score" not in got


@pytest.fixture
def models_dir(settings: Any) -> Path:
    settings.models_dir.mkdir(parents=True, exist_ok=True)
    return Path(settings.models_dir)


# -- scikit-learn ------------------------------------------------------------------------------
def test_sklearn_probabilities_are_predict_proba(settings: Any, models_dir: Path) -> None:
    est = LogisticRegression().fit(X, Y3)
    joblib.dump(est, models_dir / "clf.joblib")
    got = _scored(settings, "clf.joblib", "sklearn")
    _expect_classes(got, est.predict_proba(X), est.classes_)


def test_sklearn_declared_logits_read_decision_function(settings: Any, models_dir: Path) -> None:
    est = LogisticRegression().fit(X, Y3 == "a")
    joblib.dump(est, models_dir / "bin.joblib")
    got = _scored(settings, "bin.joblib", "sklearn", output="logits", labels=["no", "yes"])
    p = sigmoid(est.decision_function(X))
    _expect_classes(got, np.column_stack([1 - p, p]), ["no", "yes"])
    np.testing.assert_allclose(np.column_stack([1 - p, p]), est.predict_proba(X), atol=1e-12)


def test_sklearn_score_is_negated_score_samples(settings: Any, models_dir: Path) -> None:
    est = IsolationForest(n_estimators=20, random_state=0).fit(X)
    joblib.dump(est, models_dir / "iso.joblib")
    got = _scored(settings, "iso.joblib", "sklearn", output="score", threshold=0.55)
    np.testing.assert_array_equal(got["score"], -est.score_samples(X))
    assert got["anomaly"].tolist() == (-est.score_samples(X) > 0.55).tolist()


def test_sklearn_regression_is_predict_without_a_flag(settings: Any, models_dir: Path) -> None:
    est = LinearRegression().fit(X, X @ [1.0, 2.0, -3.0])
    joblib.dump(est, models_dir / "reg.joblib")
    got = _scored(settings, "reg.joblib", "sklearn")  # inferred: a regressor
    np.testing.assert_array_equal(got["score"], est.predict(X))
    assert set(got) == {"score"}


# -- ONNX --------------------------------------------------------------------------------------
def _onnx_linear(
    path: Path, weights: np.ndarray, final: str | None, meta: str | None = None
) -> Any:
    """A MatMul graph, optionally ending in ``final`` (Softmax, Sigmoid)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    k = weights.shape[1]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["z" if final else "y"])]
    if final:
        attrs = {"axis": 1} if final == "Softmax" else {}
        nodes.append(helper.make_node(final, ["z"], ["y"], **attrs))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, k])],
        [numpy_helper.from_array(weights.astype(np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if meta:
        helper.set_model_props(model, {"output": meta})
    onnx.save(model, str(path))
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


W3 = np.array([[1.0, -1.0, 0.2], [0.5, 1.0, -1.0], [-0.3, 0.4, 1.0]])


def test_onnx_classifier_probabilities_and_labels_from_the_graph(
    settings: Any, models_dir: Path
) -> None:
    from skl2onnx import to_onnx

    est = LogisticRegression().fit(X32, Y3)
    onx = to_onnx(est, X32[:1], options={id(est): {"zipmap": False}})
    (models_dir / "clf.onnx").write_bytes(onx.SerializeToString())
    import onnxruntime as ort

    session = ort.InferenceSession(str(models_dir / "clf.onnx"), providers=["CPUExecutionProvider"])
    labels, probs = session.run(None, {session.get_inputs()[0].name: X32})
    got = _scored(settings, "clf.onnx", "onnx")
    _expect_classes(got, probs, ["a", "b", "c"])
    assert got["label"].tolist() == labels.tolist()


def test_onnx_final_softmax_is_not_softmaxed_again(settings: Any, models_dir: Path) -> None:
    session = _onnx_linear(models_dir / "soft.onnx", W3, "Softmax")
    probs = session.run(None, {"x": X32})[0]
    _expect_classes(_scored(settings, "soft.onnx", "onnx", labels=list(LABELS3)), probs, LABELS3)


def test_onnx_logits_metadata_and_declared(settings: Any, models_dir: Path) -> None:
    session = _onnx_linear(models_dir / "logits.onnx", W3, None)
    logits = session.run(None, {"x": X32})[0].astype(np.float64)
    _expect_classes(_scored(settings, "logits.onnx", "onnx"), softmax(logits), ["0", "1", "2"])
    _onnx_linear(models_dir / "meta.onnx", W3, None, meta="probabilities")
    raw = _scored(settings, "meta.onnx", "onnx")  # metadata says: already probabilities
    _expect_classes(raw, logits, ["0", "1", "2"])


def test_onnx_score_and_regression(settings: Any, models_dir: Path) -> None:
    session = _onnx_linear(models_dir / "one.onnx", W3[:, :1], None)
    values = session.run(None, {"x": X32})[0][:, 0].astype(np.float64)
    score = _scored(settings, "one.onnx", "onnx", threshold=0.5)
    np.testing.assert_array_equal(score["score"], values)
    assert score["anomaly"].tolist() == (values > 0.5).tolist()
    regression = _scored(settings, "one.onnx", "onnx", output="regression")
    assert set(regression) == {"score"}
    np.testing.assert_array_equal(regression["score"], values)


# -- PyTorch -----------------------------------------------------------------------------------
def _torch_files(models_dir: Path, net: Any, stem: str) -> list[str]:
    """Save ``net`` as TorchScript (``.pt``) and as an exported program (``.pt2``)."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(net).save(str(models_dir / f"{stem}.pt"))
    batch = torch.export.Dim("batch")
    program = torch.export.export(net, (torch.zeros(4, 3),), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(models_dir / f"{stem}.pt2"))
    return [f"{stem}.pt", f"{stem}.pt2"]


def _torch_net(*last: Any, out: int = 3) -> Any:
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, out), *last
    ).eval()


def _torch_call(net: Any) -> np.ndarray:
    import torch

    with torch.no_grad():
        return np.asarray(net(torch.from_numpy(X32)).numpy())


def test_torch_final_softmax_gives_exactly_its_probabilities(
    settings: Any, models_dir: Path
) -> None:
    import torch

    net = _torch_net(torch.nn.Softmax(dim=1))
    probs = _torch_call(net)
    for path in _torch_files(models_dir, net, "soft"):
        _expect_classes(_scored(settings, path, "torch", labels=list(LABELS3)), probs, LABELS3)


def test_torch_logits_sigmoid_score_regression(settings: Any, models_dir: Path) -> None:
    import torch

    logits_net = _torch_net()
    logits = _torch_call(logits_net).astype(np.float64)
    for path in _torch_files(models_dir, logits_net, "logits"):  # a linear end: logits
        _expect_classes(_scored(settings, path, "torch"), softmax(logits), ["0", "1", "2"])
    binary = _torch_net(torch.nn.Sigmoid(), out=1)
    p = _torch_call(binary)[:, 0].astype(np.float64)
    for path in _torch_files(models_dir, binary, "binary"):
        got = _scored(settings, path, "torch", labels=["ok", "bad"])
        _expect_classes(got, np.column_stack([1 - p, p]), ["ok", "bad"])
    single = _torch_net(out=1)
    values = _torch_call(single)[:, 0].astype(np.float64)
    for path in _torch_files(models_dir, single, "single"):
        score = _scored(settings, path, "torch", threshold=0.1)
        np.testing.assert_array_equal(score["score"], values)
        assert score["anomaly"].tolist() == (values > 0.1).tolist()
        regression = _scored(settings, path, "torch", output="regression")
        assert set(regression) == {"score"}
        np.testing.assert_array_equal(regression["score"], values)


def test_torch_threads_from_config_during_inference(settings: Any, models_dir: Path) -> None:
    import torch

    seen: list[int] = []

    class Probe(torch.nn.Module):
        """Records the intra-op threads torch has while the loaded program runs."""

        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(torch.get_num_threads())
            return self.inner(x)

    _torch_files(models_dir, _torch_net(), "net")
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            model: Any = _model(settings, "net.pt2", "torch", threads=threads)
            model.module = Probe(model.module)
            model.score(TABLE)
        assert seen == [1, 2]
    finally:
        torch.set_num_threads(before)


# -- Keras 3 (torch backend unless KERAS_BACKEND says otherwise) -------------------------------
def _keras_file(models_dir: Path, name: str, units: int, activation: str | None) -> Any:
    from sluice.models.keras_models import import_keras

    keras = import_keras()
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(units, activation=activation),
        ]
    )
    with warnings.catch_warnings():  # keras's torch backend trips a numpy 2 deprecation on save
        warnings.simplefilter("ignore", DeprecationWarning)
        model.save(str(models_dir / name))
    return keras.models.load_model(str(models_dir / name))


def _keras_predict(model: Any) -> np.ndarray:
    """Keras's own ``predict_on_batch`` on the test rows."""
    with warnings.catch_warnings():  # the same numpy 2 deprecation, converting outputs
        warnings.simplefilter("ignore", DeprecationWarning)
        return np.asarray(model.predict_on_batch(X32))


def test_keras_softmax_gives_exactly_its_probabilities(settings: Any, models_dir: Path) -> None:
    keras_model = _keras_file(models_dir, "soft.keras", 3, "softmax")
    probs = _keras_predict(keras_model)
    got = _scored(settings, "soft.keras", "keras", labels=list(LABELS3))
    _expect_classes(got, probs, LABELS3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        np.testing.assert_allclose(probs, keras_model.predict(X32, verbose=0), rtol=1e-6)


def test_keras_logits_sigmoid_regression(settings: Any, models_dir: Path) -> None:
    logits = _keras_predict(_keras_file(models_dir, "lin.keras", 3, None))
    _expect_classes(
        _scored(settings, "lin.keras", "keras"), softmax(logits.astype(float)), list("012")
    )
    p = _keras_predict(_keras_file(models_dir, "sig.keras", 1, "sigmoid"))[:, 0]
    got = _scored(settings, "sig.keras", "keras", labels=["ok", "bad"])
    _expect_classes(got, np.column_stack([1 - p.astype(float), p]), ["ok", "bad"])
    values = _keras_predict(_keras_file(models_dir, "reg.keras", 1, None))
    regression = _scored(settings, "reg.keras", "keras", output="regression")
    assert set(regression) == {"score"}
    np.testing.assert_array_equal(regression["score"], values[:, 0].astype(np.float64))
    score = _scored(settings, "reg.keras", "keras", threshold=0.0)
    assert score["anomaly"].tolist() == (values[:, 0] > 0.0).tolist()


def test_keras_wrong_feature_count_fails_at_load(settings: Any, models_dir: Path) -> None:
    _keras_file(models_dir, "soft.keras", 3, "softmax")
    config = ModelConfig(name="m", type="keras", features=["x0", "x1"], path="soft.keras")
    with pytest.raises(ModelError, match="expects 3 feature"):
        create_model(config, ModelContext("p", settings))


# -- declarations are checked when the pipeline is built ---------------------------------------
@pytest.mark.parametrize(
    ("options", "key", "message"),
    [
        ({"output": "probability"}, "output", "not one of logits, probabilities"),
        ({"output": "logits", "threshold": 0.5}, "threshold", "applies to output: score"),
        ({"output": "regression", "labels": ["a", "b"]}, "labels", "has none"),
        ({"labels": ["a"]}, "labels", "at least two distinct"),
        ({"labels": ["a", "b"], "classes": ["a", "b"]}, "classes", "not both"),
        ({"threads": 0}, "threads", "positive integer"),
        ({"threshold": "high"}, "threshold", "must be a number"),
    ],
)
def test_bad_declarations_are_config_errors(
    settings: Any, options: dict[str, Any], key: str, message: str
) -> None:
    config = ModelConfig(name="m", type="torch", features=FEATURES, path="x.pt2", **options)
    with pytest.raises(ConfigError, match=message) as caught:
        build_model(config, ModelContext("p", settings))
    assert caught.value.key == key


def test_labels_that_do_not_match_the_classes_fail_inference(
    settings: Any, models_dir: Path
) -> None:
    _onnx_linear(models_dir / "soft.onnx", W3, "Softmax")
    with pytest.raises(ModelError, match="2 label"):
        _model(settings, "soft.onnx", "onnx", labels=["a", "b"]).score(TABLE)


def test_onnx_session_uses_the_configured_threads(settings: Any, models_dir: Path) -> None:
    _onnx_linear(models_dir / "soft.onnx", W3, "Softmax")
    model: Any = _model(settings, "soft.onnx", "onnx", threads=1)
    assert model.session.get_session_options().intra_op_num_threads == 1


def test_inference_calls_of_several_models_never_overlap(settings: Any, models_dir: Path) -> None:
    """A second model's call from another thread waits until the first one's has finished."""
    import threading

    import torch

    order: list[str] = []
    started: list[threading.Thread] = []
    _torch_files(models_dir, _torch_net(), "net")
    first: Any = _model(settings, "net.pt2", "torch", threads=1)
    second: Any = _model(settings, "net.pt2", "torch", threads=1)

    class Recorder(torch.nn.Module):
        def __init__(self, inner: Any, name: str, then: Any = None) -> None:
            super().__init__()
            self.inner, self.name, self.then = inner, name, then

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            order.append(f"{self.name} starts")
            if self.then is not None:
                other = threading.Thread(target=self.then)
                started.append(other)
                other.start()
                other.join(0.2)  # the other call must still be waiting for the lock
                order.append(f"{self.name} ends")
            return self.inner(x)

    second.module = Recorder(second.module, "second")
    first.module = Recorder(first.module, "first", then=lambda: second.infer(X[:5]))
    first.infer(X[:5])
    started[0].join()
    assert order == ["first starts", "first ends", "second starts"]
