"""Batch-inference models: scikit-learn, ONNX, TorchScript and Keras files, one protocol.

A model is loaded from the registry (``registry: NAME``, default the model's own name,
production version) or from ``path:`` under the model directory. Columns map to features by
name; inference runs on the whole batch; ``refresh()`` picks up a newly promoted version.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from sluice.config.models import ModelConfig
from sluice.core.deps import require
from sluice.core.errors import ConfigError, ModelError
from sluice.models.base import Model, ModelContext
from sluice.models.inference import Outputs, append_outputs, from_anomaly_scores, from_probabilities
from sluice.models.online import feature_matrix
from sluice.models.registry import ModelRegistry, ModelVersion

_OPTIONS = {"registry", "path", "version", "threshold", "classes"}


class FileModel(Model):
    """Common loading, feature checks and hot reload of file-based models."""

    format = "file"

    def __init__(self, config: ModelConfig, context: ModelContext) -> None:
        super().__init__(config, context)
        unknown = set(config.options) - _OPTIONS
        if unknown:
            raise ConfigError(
                f"model {config.name!r}: unknown option(s) "
                f"{', '.join(sorted(unknown))}; available: {', '.join(sorted(_OPTIONS))}"
            )
        self._registry: ModelRegistry | None = None
        self.version: ModelVersion | None = None
        self.params: dict[str, Any] = {}

    @property
    def registry(self) -> ModelRegistry:
        """The model registry (opened by ``start()``)."""
        if self._registry is None:
            self._registry = ModelRegistry(self.context.settings)
        return self._registry

    def start(self) -> None:
        """Open the registry and load the artifact."""
        self._load()

    def _locate(self) -> tuple[Path, ModelVersion | None]:
        opts = self.config.options
        if opts.get("path"):
            return self.registry.resolve_artifact(opts["path"]), None
        version = self.registry.get(opts.get("registry") or self.name, opts.get("version"))
        return self.registry.fetch(version), version

    def _load(self) -> None:
        path, version = self._locate()
        try:
            self.load_artifact(path)
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(
                f"model {self.name!r}: cannot load {path.name} as {self.format}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        self.version = version
        self.params = dict(version.params) if version else _sidecar_params(path)
        self.check_features()

    def check_features(self) -> None:
        """Fail at load when the model expects a different number of features."""
        expected = self.expected_features()
        if expected is not None and self.config.features and expected != len(self.config.features):
            raise ModelError(
                f"model {self.name!r} expects {expected} feature(s) but the "
                f"pipeline gives {len(self.config.features)}: "
                f"{', '.join(self.config.features)}"
            )

    def expected_features(self) -> int | None:
        """How many features the loaded artifact takes (None when unknown)."""
        return None

    def load_artifact(self, path: Path) -> None:
        """Load the model file."""
        raise NotImplementedError

    def infer(self, X: np.ndarray) -> Outputs:
        """Run the model on a feature matrix."""
        raise NotImplementedError

    def features(self) -> list[str]:
        """Feature columns: from the pipeline, else from the registry."""
        if self.config.features:
            return self.config.features
        if self.version and self.version.features:
            return self.version.features
        raise ConfigError(f"model {self.name!r}: no features configured or registered")

    def score(self, table: pa.Table) -> pa.Table:
        """Batch inference over ``table``."""
        X = feature_matrix(table, self.features())
        if table.num_rows == 0:
            return table  # nothing to score (estimators refuse zero samples)
        return append_outputs(table, self.name, self.infer(X))

    def refresh(self) -> bool:
        """Reload when the registry's production version changed."""
        if self.config.options.get("path") or self.config.options.get("version"):
            return False
        current = self.registry.production(self.config.options.get("registry") or self.name)
        if current is None or (self.version and current.version == self.version.version):
            return False
        self._load()
        return True

    def threshold(self, default: float) -> float:
        """The anomaly threshold: the option, else the registered one, else ``default``."""
        return float(self.config.options.get("threshold", self.params.get("threshold", default)))

    def classes(self, n: int) -> list[str]:
        """Class names: the option, else the registered ones, else 0..n-1."""
        names = self.config.options.get("classes") or self.params.get("classes")
        return [str(c) for c in names] if names else [str(i) for i in range(n)]

    def describe(self) -> dict[str, Any]:
        """Type and loaded version."""
        return {**super().describe(), "version": self.version.version if self.version else None}


def _sidecar_params(path: Path) -> dict[str, Any]:
    side = path.with_suffix(path.suffix + ".json")
    return json.loads(side.read_text()) if side.exists() else {}


class SklearnModel(FileModel):
    """A scikit-learn estimator saved with joblib (classifier, regressor or outlier detector)."""

    format = "sklearn"

    def load_artifact(self, path: Path) -> None:
        """Load with joblib (only from under the model directory)."""
        joblib = require("joblib", "ml", "scikit-learn models")
        self.estimator = joblib.load(path)
        if not hasattr(self.estimator, "predict"):
            raise ModelError(f"model {self.name!r}: {path.name} holds no estimator")

    def expected_features(self) -> int | None:
        """``n_features_in_`` of the estimator."""
        n = getattr(self.estimator, "n_features_in_", None)
        return int(n) if n is not None else None

    def infer(self, X: np.ndarray) -> Outputs:
        """predict_proba / score_samples / predict, whichever the estimator has."""
        X = np.nan_to_num(X, nan=0.0, posinf=0.0, neginf=0.0)
        est = self.estimator
        if hasattr(est, "predict_proba"):
            return from_probabilities(est.predict_proba(X), [str(c) for c in est.classes_])
        if hasattr(est, "score_samples"):
            return from_anomaly_scores(-est.score_samples(X), self.threshold(0.6))
        return Outputs(score=np.asarray(est.predict(X), dtype=np.float64))


class IsolationForestModel(SklearnModel):
    """scikit-learn IsolationForest trained by ``sluice models train`` on lake data."""

    format = "isolation_forest"


class OnnxModel(FileModel):
    """An ONNX model run with onnxruntime (e.g. converted with skl2onnx, zipmap off)."""

    format = "onnx"

    def load_artifact(self, path: Path) -> None:
        """Create the inference session."""
        ort = require("onnxruntime", "onnx", "ONNX models")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0]

    def expected_features(self) -> int | None:
        """The second dimension of the input, when fixed."""
        shape = self.input.shape
        return shape[1] if len(shape) == 2 and isinstance(shape[1], int) else None

    def infer(self, X: np.ndarray) -> Outputs:
        """Run the session; two outputs (label, probabilities) mean a classifier."""
        dtype = np.float64 if "double" in self.input.type else np.float32
        outputs = self.session.run(None, {self.input.name: X.astype(dtype)})
        if len(outputs) >= 2 and np.ndim(outputs[1]) == 2:
            probs = np.asarray(outputs[1])
            classes = self.params.get("classes") or None
            if classes is None:
                labels = np.asarray(outputs[0]).reshape(-1)
                out = from_probabilities(probs, self.classes(probs.shape[1]))
                out.label = labels.astype(str)
                return out
            return from_probabilities(probs, classes)
        scores = np.asarray(outputs[0], dtype=np.float64)
        if scores.ndim == 2 and scores.shape[1] > 1:
            return from_probabilities(_softmax(scores), self.classes(scores.shape[1]))
        if "threshold" in self.params or "threshold" in self.config.options:
            return from_anomaly_scores(scores.reshape(-1), self.threshold(0.0))
        return Outputs(score=scores.reshape(-1))


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


class TorchModel(FileModel):
    """A PyTorch program: ``.pt2`` (torch.export) or TorchScript; (n, k) outputs are class
    logits, (n,) or (n, 1) outputs are scores."""

    format = "torch"

    def load_artifact(self, path: Path) -> None:
        """Load an exported program (``.pt2``) or a TorchScript file on the CPU."""
        torch = require("torch", "torch", "PyTorch models")
        self.torch = torch
        if path.suffix == ".pt2":
            self.module = torch.export.load(str(path)).module()
            return
        with warnings.catch_warnings():  # TorchScript is deprecated upstream but still common
            warnings.simplefilter("ignore", DeprecationWarning)
            self.module = torch.jit.load(str(path), map_location="cpu")
        self.module.eval()

    def infer(self, X: np.ndarray) -> Outputs:
        """Run the module without gradients."""
        with self.torch.no_grad():
            out = self.module(self.torch.from_numpy(np.nan_to_num(X).astype(np.float32)))
        values = out.detach().cpu().numpy().astype(np.float64)
        if values.ndim == 2 and values.shape[1] > 1:
            return from_probabilities(_softmax(values), self.classes(values.shape[1]))
        scores = values.reshape(-1)
        if "threshold" in self.params or "threshold" in self.config.options:
            return from_anomaly_scores(scores, self.threshold(0.0))
        return Outputs(score=scores)


class AutoencoderModel(TorchModel):
    """PyTorch autoencoder trained by ``sluice models train``; its output is the error."""

    format = "autoencoder"


class KerasModel(FileModel):
    """A ``.keras`` file run with TensorFlow (install ``sluice[keras]``)."""

    format = "keras"

    def load_artifact(self, path: Path) -> None:
        """``keras.models.load_model``."""
        tf = require("tensorflow", "keras", "Keras models")
        self.keras_model = tf.keras.models.load_model(str(path))

    def infer(self, X: np.ndarray) -> Outputs:
        """Batched ``predict``."""
        values = np.asarray(self.keras_model.predict(np.nan_to_num(X), verbose=0), dtype=np.float64)
        if values.ndim == 2 and values.shape[1] > 1:
            return from_probabilities(values, self.classes(values.shape[1]))
        return Outputs(score=values.reshape(-1))
