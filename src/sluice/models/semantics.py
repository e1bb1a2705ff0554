"""What a model's raw outputs mean: ``output: logits | probabilities | score | regression``.

The same rules hold for every file format (scikit-learn, ONNX, PyTorch, Keras, TensorFlow):

* ``probabilities``: one column per class (row sums to 1) → ``label`` is the most likely class,
  ``proba`` its probability; a single column is the probability of the second (positive) label.
* ``logits``: unnormalised class scores → softmax (a single column: sigmoid), then as above.
* ``score``: one value per row → ``score``; with ``threshold:``, ``anomaly`` is score > threshold.
* ``regression``: one predicted value per row → ``score``; never a flag.

When ``output:`` is not declared the format infers it from the final layer where that can be
known (softmax/sigmoid → probabilities, log-softmax → logits), else from the shape: several
columns are logits, one column is a score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sluice.core.errors import ConfigError, ModelError
from sluice.models.inference import Outputs, from_anomaly_scores, from_probabilities

OUTPUT_KINDS = ("logits", "probabilities", "score", "regression")
CLASSIFIER_KINDS = ("logits", "probabilities")

# Final operations (any framework's spelling, lower case) that fix what the output is.
_FINAL_OPS = {
    "softmax": "probabilities",
    "sigmoid": "probabilities",
    "log_softmax": "logits",
    "logsoftmax": "logits",
}


@dataclass(frozen=True)
class OutputSpec:
    """The declared output semantics of a file model (None where not declared)."""

    kind: str | None = None
    labels: tuple[str, ...] | None = None
    threshold: float | None = None

    @classmethod
    def from_options(cls, name: str, options: dict[str, Any]) -> OutputSpec:
        """Read and check ``output``, ``labels`` (alias ``classes``) and ``threshold``."""
        kind = options.get("output")
        if kind is not None and kind not in OUTPUT_KINDS:
            raise ConfigError(
                f"model {name!r}: output {kind!r} is not one of {', '.join(OUTPUT_KINDS)}",
                key="output",
            )
        labels = _labels(name, options)
        if labels is not None and kind in ("score", "regression"):
            raise ConfigError(
                f"model {name!r}: labels name classes, but output {kind!r} has none", key="labels"
            )
        threshold = options.get("threshold")
        if threshold is not None:
            if isinstance(threshold, bool) or not isinstance(threshold, int | float):
                raise ConfigError(f"model {name!r}: threshold must be a number", key="threshold")
            if kind in ("regression", *CLASSIFIER_KINDS):
                raise ConfigError(
                    f"model {name!r}: threshold applies to output: score, not {kind!r}",
                    key="threshold",
                )
        return cls(kind, labels, None if threshold is None else float(threshold))


def _labels(name: str, options: dict[str, Any]) -> tuple[str, ...] | None:
    if "labels" in options and "classes" in options:
        raise ConfigError(f"model {name!r}: give labels or classes, not both", key="classes")
    key = "labels" if "labels" in options else "classes"
    labels = options.get(key)
    if labels is None:
        return None
    if not isinstance(labels, list) or len(labels) < 2 or len(set(map(str, labels))) < len(labels):
        raise ConfigError(
            f"model {name!r}: {key} must be a list of at least two distinct class names", key=key
        )
    return tuple(str(label) for label in labels)


def kind_of_final_op(op: str | None) -> str | None:
    """The output kind a final operation implies (``aten.softmax.int``, ``Softmax``, ...)."""
    if not op:
        return None
    name = op.lower().replace("aten::", "").replace("aten.", "").split(".")[0].lstrip("_")
    return _FINAL_OPS.get(name)


def kind_from_shape(values: np.ndarray) -> str:
    """The default when nothing else says: several columns are logits, one is a score."""
    return "logits" if values.ndim == 2 and values.shape[1] > 1 else "score"


def interpret(
    values: np.ndarray,
    kind: str,
    labels: list[str] | tuple[str, ...] | None,
    threshold: float | None,
) -> Outputs:
    """Turn a model's raw (n,) or (n, k) output into Sluice's output columns."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2:
        raise ModelError(f"output has shape {values.shape}; expected (rows,) or (rows, columns)")
    columns = values.shape[1]
    if kind in CLASSIFIER_KINDS:
        if kind == "logits":
            values = sigmoid(values) if columns == 1 else softmax(values)
        if columns == 1:
            values = np.column_stack([1.0 - values[:, 0], values[:, 0]])
        names = list(labels) if labels else [str(i) for i in range(values.shape[1])]
        if len(names) != values.shape[1]:
            raise ModelError(
                f"{len(names)} label(s) {names} for {values.shape[1]} class(es) of output {kind}"
            )
        return from_probabilities(values, names)
    if columns != 1:
        raise ModelError(
            f"output {kind} needs one value per row, but the model gives {columns}; "
            "declare output: logits or probabilities for class columns"
        )
    if kind == "score" and threshold is not None:
        return from_anomaly_scores(values[:, 0], threshold)
    return Outputs(score=values[:, 0].copy())


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits."""
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Element-wise logistic function."""
    return 0.5 * (1.0 + np.tanh(0.5 * logits))
