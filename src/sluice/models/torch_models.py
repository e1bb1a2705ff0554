"""PyTorch models: ``.pt2`` (torch.export) and TorchScript files, run on the CPU."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from sluice.core.deps import require
from sluice.models.formats import FileModel


class TorchModel(FileModel):
    """A PyTorch program: ``.pt2`` (torch.export) or TorchScript.

    The final operation of the graph says what the output is (softmax or sigmoid:
    probabilities; log-softmax or anything else on several columns: logits; one column: a
    score) unless ``output:`` declares it.
    """

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

    def final_op(self) -> str | None:
        """The op producing the (first) output: ``aten.softmax.int``, ``aten::sigmoid``, ..."""
        if isinstance(self.module, self.torch.jit.ScriptModule):
            graph = self.module.inlined_graph
            value = next(iter(graph.return_node().inputs()), None)
            return None if value is None else str(value.node().kind())
        graph = getattr(self.module, "graph", None)
        output = next((n for n in graph.nodes if n.op == "output"), None) if graph else None
        if output is None:
            return None
        first: Any = output.args[0]
        while isinstance(first, list | tuple) and first:
            first = first[0]
        return str(first.target) if getattr(first, "op", None) == "call_function" else None

    def run(self, X: np.ndarray) -> np.ndarray:
        """The module's forward pass without gradients (first tensor of a tuple output)."""
        torch = self.torch
        with torch.no_grad():
            out = self.module(torch.from_numpy(np.nan_to_num(X).astype(np.float32)))
        while isinstance(out, list | tuple):
            out = out[0]
        return np.asarray(out.detach().cpu().numpy())


class AutoencoderModel(TorchModel):
    """PyTorch autoencoder trained by ``sluice models train``; its output is the error."""

    format = "autoencoder"

    def inferred_kind(self) -> str:
        """The reconstruction error is an anomaly score."""
        return "score"
