"""Keras 3 ``.keras`` files (torch or TensorFlow backend) and TensorFlow SavedModel directories.

Keras picks its backend once per process, from ``KERAS_BACKEND``; when that is unset Sluice
sets it before the first import: ``torch`` if PyTorch is installed, else ``tensorflow``. So
``.keras`` files run without TensorFlow.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from sluice.config.models import ModelConfig
from sluice.core.deps import require
from sluice.core.errors import ConfigError, MissingDependencyError, ModelError
from sluice.models.base import ModelContext
from sluice.models.formats import FileModel

_PASS_THROUGH = {"Identity", "IdentityN", "StatefulPartitionedCall", "PartitionedCall"}


def import_keras() -> Any:
    """Keras 3 on the configured backend (``KERAS_BACKEND``, else torch, else tensorflow)."""
    if "keras" not in sys.modules and not os.environ.get("KERAS_BACKEND"):
        has_torch = importlib.util.find_spec("torch") is not None
        os.environ["KERAS_BACKEND"] = "torch" if has_torch else "tensorflow"
    if importlib.util.find_spec("keras") is None:
        raise MissingDependencyError("keras", "keras", "Keras models")
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    try:
        return importlib.import_module("keras")
    except ImportError as exc:  # keras is there, its backend is not
        extra = "tensorflow" if backend == "tensorflow" else "keras"
        raise MissingDependencyError(backend, extra, f"Keras on the {backend} backend") from exc


class KerasModel(FileModel):
    """A ``.keras`` file; its final layer's activation says whether it outputs probabilities."""

    format = "keras"

    def load_artifact(self, path: Path) -> None:
        """``keras.models.load_model`` (no custom objects, safe mode)."""
        keras = import_keras()
        self.backend = keras.backend.backend()
        if self.backend == "torch":
            self.torch = require("torch", "keras", "Keras on the torch backend")
        elif self.backend == "tensorflow":
            set_tensorflow_threads(require("tensorflow", "tensorflow"), self.threads)
        self.keras_model = keras.models.load_model(str(path), compile=False)

    def final_op(self) -> str | None:
        """The activation (or layer/op name) that makes the first output."""
        model = self.keras_model
        outputs = getattr(model, "outputs", None) or []
        history = getattr(outputs[0], "_keras_history", None) if outputs else None
        layer = getattr(history, "operation", None) or (model.layers[-1] if model.layers else None)
        if layer is None:
            return None
        activation = getattr(layer, "activation", None)
        if callable(activation):
            return str(getattr(activation, "__name__", type(activation).__name__))
        return type(layer).__name__

    def expected_features(self) -> int | None:
        """The last dimension of the input, when fixed."""
        inputs = getattr(self.keras_model, "inputs", None)
        shape = inputs[0].shape if inputs else None
        return shape[-1] if shape and len(shape) == 2 and isinstance(shape[-1], int) else None

    def run(self, X: np.ndarray) -> np.ndarray:
        """The model called on the whole batch in inference mode (its first output).

        This is what ``predict_on_batch`` does; on the torch backend Sluice calls the model
        under ``no_grad`` itself, as that conversion to numpy warns on numpy 2.
        """
        x = np.nan_to_num(X).astype(np.float32)
        if self.backend == "torch":
            with self.torch.no_grad():
                out = self.keras_model(self.torch.from_numpy(x), training=False)
        else:
            out = self.keras_model.predict_on_batch(x)
        while isinstance(out, list | tuple):
            out = out[0]
        if isinstance(out, dict):
            out = next(iter(out.values()))
        if hasattr(out, "detach"):
            out = out.detach().cpu().numpy()
        return np.asarray(out)


class TensorFlowModel(FileModel):
    """A TensorFlow SavedModel directory called through one signature (``serving_default``)."""

    format = "tensorflow"
    extra_options = frozenset({"signature", "signature_output"})

    def __init__(self, config: ModelConfig, context: ModelContext) -> None:
        super().__init__(config, context)
        for key in self.extra_options & set(config.options):
            if not isinstance(config.options[key], str):
                raise ConfigError(f"model {config.name!r}: {key} must be a name", key=key)
        self.signature_name: str = config.options.get("signature", "serving_default")

    def load_artifact(self, path: Path) -> None:
        """``tf.saved_model.load`` and pick the signature, its one input and one output."""
        tf = require("tensorflow", "tensorflow", "TensorFlow SavedModel models")
        self.tf = tf
        set_tensorflow_threads(tf, self.threads)
        self.loaded = tf.saved_model.load(str(path))  # keeps the signature's variables alive
        signatures = dict(self.loaded.signatures)
        if self.signature_name not in signatures:
            raise ModelError(
                f"model {self.name!r}: {path.name} has no signature {self.signature_name!r}; "
                f"it has: {', '.join(sorted(signatures)) or 'none'}"
            )
        self.function = signatures[self.signature_name]
        inputs = self.function.structured_input_signature[1]
        if len(inputs) != 1:
            raise ModelError(
                f"model {self.name!r}: signature {self.signature_name!r} takes "
                f"{len(inputs)} inputs ({', '.join(sorted(inputs))}); Sluice feeds one matrix"
            )
        self.input_name, self.input_spec = next(iter(inputs.items()))
        self.output_key = self._output_key(sorted(self.function.structured_outputs))

    def _output_key(self, keys: list[str]) -> str:
        wanted = self.config.options.get("signature_output")
        if wanted is None and len(keys) == 1:
            return keys[0]
        if wanted in keys:
            return str(wanted)
        raise ModelError(
            f"model {self.name!r}: signature {self.signature_name!r} has outputs "
            f"{', '.join(keys)}; choose one with signature_output:"
        )

    def final_op(self) -> str | None:
        """The TensorFlow op that makes the chosen output, behind identities and calls."""
        keys = sorted(self.function.structured_outputs)
        tensor = self.function.outputs[keys.index(self.output_key)]
        graph = self.function.graph.as_graph_def()
        functions = {f.signature.name: f for f in graph.library.function}
        return _producer({n.name: n for n in graph.node}, functions, tensor.name, 0)

    def expected_features(self) -> int | None:
        """The last dimension of the signature's input, when fixed."""
        shape = self.input_spec.shape
        return shape[-1] if shape.rank == 2 and shape[-1] is not None else None

    def run(self, X: np.ndarray) -> np.ndarray:
        """Call the signature on the batch."""
        dtype = self.input_spec.dtype.as_numpy_dtype
        feed = self.tf.constant(np.nan_to_num(X).astype(dtype))
        return np.asarray(self.function(**{self.input_name: feed})[self.output_key].numpy())


def _producer(nodes: dict[str, Any], functions: dict[str, Any], ref: str, depth: int) -> str | None:
    """Follow ``ref`` (``node[:output]:index``) through identities and function calls."""
    name, _, rest = ref.lstrip("^").partition(":")
    node = nodes.get(name)
    if node is None or depth > 50:
        return None
    if node.op in ("StatefulPartitionedCall", "PartitionedCall"):
        function = functions.get(node.attr["f"].func.name)
        index = int(rest.rsplit(":", 1)[-1]) if rest else 0
        if function is None or index >= len(function.signature.output_arg):
            return None
        inner = {n.name: n for n in function.node_def}
        ret = function.ret[function.signature.output_arg[index].name]
        return _producer(inner, functions, ret, depth + 1)
    if node.op in _PASS_THROUGH and node.input:
        return _producer(nodes, functions, node.input[0], depth + 1)
    return str(node.op)


def set_tensorflow_threads(tf: Any, threads: int) -> None:
    """Set TensorFlow's intra-op pool once; it is fixed when its runtime starts."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # already initialised by an earlier model: keep its setting
        pass
