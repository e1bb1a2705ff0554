"""The model protocol: score an Arrow batch (and learn from it, if online); state is checkpointed.

A model named ``m`` adds columns ``m_score``, ``m_anomaly`` (detectors) or ``m_label`` /
``m_proba`` (classifiers), and ``m_reason``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from sluice.config.models import ModelConfig
from sluice.core.plugins import load_plugin
from sluice.core.settings import Settings

if TYPE_CHECKING:
    from sluice.storage.checkpoints import State

BUILTIN_MODELS = {
    "online_anomaly": "sluice.models.online:OnlineAnomalyModel",
    "isolation_forest": "sluice.models.formats:IsolationForestModel",
    "sklearn": "sluice.models.formats:SklearnModel",
    "onnx": "sluice.models.formats:OnnxModel",
    "torch": "sluice.models.torch_models:TorchModel",
    "keras": "sluice.models.keras_models:KerasModel",
    "tensorflow": "sluice.models.keras_models:TensorFlowModel",
    "autoencoder": "sluice.models.torch_models:AutoencoderModel",
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

    def start(self) -> None:  # noqa: B027 - nothing to open by default
        """Open what the model needs (registry, artifact); the constructor opens nothing."""

    def close(self) -> None:  # noqa: B027 - nothing to release by default
        """Release what ``start()`` opened."""

    def output_fields(self) -> list[pa.Field]:
        """The columns ``score`` may add (used to check actions before a run)."""
        prefix = self.name
        return [
            pa.field(f"{prefix}_score", pa.float64()),
            pa.field(f"{prefix}_anomaly", pa.bool_()),
            pa.field(f"{prefix}_onset", pa.bool_()),
            pa.field(f"{prefix}_label", pa.string()),
            pa.field(f"{prefix}_proba", pa.float64()),
            pa.field(f"{prefix}_reason", pa.string()),
        ]

    def state(self) -> State:
        """Learned state for the checkpoint: a snapshot, a ``StateDelta`` since the last
        committed one (see :mod:`sluice.models.state_log`), or None when stateless."""
        return None

    def restore(self, blob: bytes) -> None:  # noqa: B027 - stateless default
        """Restore learned state from a checkpoint."""

    def restore_deltas(self, deltas: list[bytes]) -> None:
        """Replay the deltas committed after the snapshot given to ``restore``."""
        if deltas:
            raise NotImplementedError(f"model {self.name!r} does not checkpoint deltas")

    def committed(self) -> None:  # noqa: B027 - nothing to track by default
        """The checkpoint holding the last ``state()`` is committed."""

    def lost_keys(self) -> int:
        """Keys dropped before their state warmed up, so far (0 for models without keys)."""
        return 0

    def refresh(self) -> bool:
        """Pick up a newly promoted registry version; True when the model changed."""
        return False

    def describe(self) -> dict[str, Any]:
        """A short description for status pages."""
        return {"name": self.name, "type": self.config.type}


def build_model(config: ModelConfig, context: ModelContext) -> Model:
    """Instantiate the model named by ``config.type`` without opening anything."""
    cls = load_plugin("models", config.type, BUILTIN_MODELS)
    model: Model = cls(config, context)
    return model


def create_model(config: ModelConfig, context: ModelContext) -> Model:
    """Build the model named by ``config.type`` and start it (ready to score)."""
    model = build_model(config, context)
    model.start()
    return model
