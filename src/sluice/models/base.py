"""The model protocol: score an Arrow batch (and learn from it, if online); state is checkpointed.

A model named ``m`` adds columns ``m_score``, ``m_anomaly`` (detectors) or ``m_label`` /
``m_proba`` (classifiers), and ``m_reason``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from sluice.config.models import ModelConfig
from sluice.core.plugins import load_plugin
from sluice.core.settings import Settings

BUILTIN_MODELS = {
    "online_anomaly": "sluice.models.online:OnlineAnomalyModel",
    "isolation_forest": "sluice.models.formats:IsolationForestModel",
    "sklearn": "sluice.models.formats:SklearnModel",
    "onnx": "sluice.models.formats:OnnxModel",
    "torch": "sluice.models.formats:TorchModel",
    "keras": "sluice.models.formats:KerasModel",
    "autoencoder": "sluice.models.formats:AutoencoderModel",
    "text_classifier": "sluice.models.text:TextClassifierModel",
}


@dataclass
class ModelContext:
    """What a model needs from the runtime."""

    pipeline: str
    settings: Settings


class Model(ABC):
    """Scores batches; online models also learn from them."""

    online: bool = False

    def __init__(self, config: ModelConfig, context: ModelContext) -> None:
        self.config = config
        self.context = context

    @property
    def name(self) -> str:
        """The model's name in the pipeline (prefix of its output columns)."""
        return self.config.name

    @abstractmethod
    def score(self, table: pa.Table) -> pa.Table:
        """Return ``table`` with this model's output columns added (learning if online)."""

    def state(self) -> bytes | None:
        """Serialise learned state for the checkpoint (None when stateless)."""
        return None

    def restore(self, blob: bytes) -> None:  # noqa: B027 - stateless default
        """Restore learned state from a checkpoint."""

    def refresh(self) -> bool:
        """Pick up a newly promoted registry version; True when the model changed."""
        return False

    def describe(self) -> dict[str, Any]:
        """A short description for status pages."""
        return {"name": self.name, "type": self.config.type}


def create_model(config: ModelConfig, context: ModelContext) -> Model:
    """Instantiate the model named by ``config.type``."""
    cls = load_plugin("models", config.type, BUILTIN_MODELS)
    model: Model = cls(config, context)
    return model
