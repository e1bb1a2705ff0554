"""Batch-inference models: scikit-learn and ONNX files, and the protocol every file model shares.

A model is loaded from the registry (``registry: NAME``, default the model's own name,
production version) or from ``path:`` under the model directory. Columns map to features by
name; inference runs on the whole batch; ``refresh()`` picks up a newly promoted version.
What the outputs mean is declared (``output:``, ``labels:``, ``threshold:``) or inferred, with
the same rules for every format (``sluice.models.semantics``). PyTorch lives in
``torch_models``, Keras and TensorFlow in ``keras_models``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from sluice.config.models import ModelConfig
from sluice.core.deps import require
from sluice.core.errors import ConfigError, MissingDependencyError, ModelError
from sluice.models.base import Model, ModelContext
from sluice.models.inference import Outputs, append_outputs
from sluice.models.online import feature_matrix
from sluice.models.registry import ModelRegistry, ModelVersion
from sluice.models.semantics import (
    OUTPUT_KINDS,
    OutputSpec,
    interpret,
    kind_from_shape,
    kind_of_final_op,
)
from sluice.models.threads import inference_slot, threads_option

_OPTIONS = {"registry", "path", "version", "output", "labels", "classes", "threshold", "threads"}


class FileModel(Model):
    """Common loading, feature checks and hot reload of file-based models."""

    format = "file"
    extra_options: frozenset[str] = frozenset()  # a format's own options besides _OPTIONS

    def __init__(self, config: ModelConfig, context: ModelContext) -> None:
        super().__init__(config, context)
        known = _OPTIONS | self.extra_options
        unknown = set(config.options) - known
        if unknown:
            raise ConfigError(
                f"model {config.name!r}: unknown option(s) "
                f"{', '.join(sorted(unknown))}; available: {', '.join(sorted(known))}"
            )
        self.spec = OutputSpec.from_options(config.name, config.options)
        self.threads = threads_option(config.name, config.options)
        self._registry: ModelRegistry | None = None
        self.version: ModelVersion | None = None
        self.params: dict[str, Any] = {}
        self.output_kind: str | None = None  # declared, registered or inferred at load
        self.model_labels: list[str] | None = None  # class names the artifact itself carries
        self.default_threshold: float | None = None
        self.torch: Any = None  # set by formats whose inference runs on torch's thread pool

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
        except (ModelError, MissingDependencyError):
            raise
        except Exception as exc:
            raise ModelError(
                f"model {self.name!r}: cannot load {path.name} as {self.format}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        self.version = version
        self.params = dict(version.params) if version else _sidecar_params(path)
        registered = self.params.get("output")
        registered = registered if registered in OUTPUT_KINDS else None
        self.output_kind = self.spec.kind or registered or self.inferred_kind()
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

    def inferred_kind(self) -> str | None:
        """The output kind the artifact implies (None: decided by the output's shape)."""
        try:
            return kind_of_final_op(self.final_op())
        except Exception:  # a graph we cannot read says nothing: the shape decides
            return None

    def final_op(self) -> str | None:
        """The name of the artifact's final operation or activation, when it can be read."""
        return None

    def run(self, X: np.ndarray) -> np.ndarray:
        """The framework's own call on a feature matrix: raw (n,) or (n, k) outputs."""
        raise NotImplementedError

    def infer(self, X: np.ndarray) -> Outputs:
        """Run the model on a feature matrix and read its outputs by the declared semantics."""
        with inference_slot(self.threads, self.torch):
            values = np.asarray(self.run(X))
        kind = self.output_kind or kind_from_shape(values)
        labels = self.spec.labels or self.params.get("labels") or self.params.get("classes")
        return interpret(values, kind, labels or self.model_labels, self.threshold(kind))

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

    def threshold(self, kind: str) -> float | None:
        """A score's anomaly threshold: the option, else the registered one, else the format's."""
        if kind != "score":
            return None
        found = self.spec.threshold
        if found is None:
            found = self.params.get("threshold", self.default_threshold)
        return None if found is None else float(found)

    def describe(self) -> dict[str, Any]:
        """Type, loaded version and output kind."""
        version = self.version.version if self.version else None
        return {**super().describe(), "version": version, "output": self.output_kind}


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
        classes = getattr(self.estimator, "classes_", None)
        self.model_labels = [str(c) for c in classes] if classes is not None else None
        self.default_threshold = 0.6 if hasattr(self.estimator, "score_samples") else None
        self.limits = require("threadpoolctl", "ml", "scikit-learn models").ThreadpoolController()

    def inferred_kind(self) -> str:
        """By the estimator's methods: probabilities, anomaly score, logits or regression."""
        from sklearn.base import is_classifier

        est = self.estimator
        if hasattr(est, "predict_proba"):
            return "probabilities"
        if hasattr(est, "score_samples"):
            return "score"
        if is_classifier(est) and hasattr(est, "decision_function"):
            return "logits"
        return "regression"

    def expected_features(self) -> int | None:
        """``n_features_in_`` of the estimator."""
        n = getattr(self.estimator, "n_features_in_", None)
        return int(n) if n is not None else None

    def run(self, X: np.ndarray) -> np.ndarray:
        """The method that gives the output kind, with BLAS/OpenMP limited to ``threads``."""
        X = np.nan_to_num(X, nan=0.0, posinf=0.0, neginf=0.0)
        est = self.estimator
        kind = self.output_kind
        with self.limits.limit(limits=self.threads):
            if kind == "probabilities":
                return np.asarray(est.predict_proba(X))
            if kind == "logits":
                return np.asarray(est.decision_function(X))
            if kind == "score" and hasattr(est, "score_samples"):
                return -np.asarray(est.score_samples(X))  # higher = more anomalous
            if kind == "score" and hasattr(est, "decision_function"):
                return np.asarray(est.decision_function(X))
            return np.asarray(est.predict(X), dtype=np.float64)


class IsolationForestModel(SklearnModel):
    """scikit-learn IsolationForest trained by ``sluice models train`` on lake data."""

    format = "isolation_forest"


class OnnxModel(FileModel):
    """An ONNX model run with onnxruntime (e.g. converted with skl2onnx, zipmap off)."""

    format = "onnx"

    def load_artifact(self, path: Path) -> None:
        """Create the inference session (``threads`` intra-op threads that sleep when idle)."""
        ort = require("onnxruntime", "onnx", "ONNX models")
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0]
        outputs = self.session.get_outputs()
        # A classifier from skl2onnx gives (label, probabilities): read the probabilities.
        self.output_index = 1 if len(outputs) >= 2 and len(outputs[1].shape or []) == 2 else 0
        self.graph = _onnx_graph(path)
        self.model_labels = _onnx_class_labels(self.graph)
        declared = self.session.get_modelmeta().custom_metadata_map.get("output")
        self.metadata_kind = declared if declared in OUTPUT_KINDS else None

    def inferred_kind(self) -> str | None:
        """A classifier's probabilities; the metadata's ``output`` entry; else the final op."""
        if self.output_index == 1:
            return "probabilities"
        return self.metadata_kind or super().inferred_kind()

    def final_op(self) -> str | None:
        """The type of the node that makes the output read."""
        if self.graph is None:
            return None
        name = self.session.get_outputs()[0].name
        return next((n.op_type for n in self.graph.node if name in n.output), None)

    def expected_features(self) -> int | None:
        """The second dimension of the input, when fixed."""
        shape = self.input.shape
        return shape[1] if len(shape) == 2 and isinstance(shape[1], int) else None

    def run(self, X: np.ndarray) -> np.ndarray:
        """``InferenceSession.run`` on the batch; the output read (see ``load_artifact``)."""
        dtype = np.float64 if "double" in self.input.type else np.float32
        output = self.session.get_outputs()[self.output_index].name
        return np.asarray(self.session.run([output], {self.input.name: X.astype(dtype)})[0])


def _onnx_graph(path: Path) -> Any:
    """The ONNX graph (for its final op and class labels), or None without the onnx package."""
    try:
        import onnx
    except ImportError:
        return None
    return onnx.load(str(path), load_external_data=False).graph


def _onnx_class_labels(graph: Any) -> list[str] | None:
    """``classlabels_*`` of an ONNX-ML classifier node (what skl2onnx writes)."""
    if graph is None:
        return None
    for node in graph.node:
        for attr in node.attribute:
            if attr.name == "classlabels_strings" and attr.strings:
                return [s.decode() for s in attr.strings]
            if attr.name == "classlabels_int64s" and attr.ints:
                return [str(i) for i in attr.ints]
    return None
