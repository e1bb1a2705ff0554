"""The transform protocol: a step maps an Arrow table to an Arrow table, with checkpointed state."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import pyarrow as pa

from sluice.core.context import EpochContext


class Transform(ABC):
    """One step of the pipeline between validation and the models."""

    name: str = "transform"

    @abstractmethod
    def apply(self, table: pa.Table, ctx: EpochContext) -> pa.Table:
        """Transform one micro-batch; rejects go to ``ctx.dead_letter``."""

    def finish(self, ctx: EpochContext) -> pa.Table | None:
        """Flush what is held (open windows) once the input has ended; None if nothing."""
        return None

    def state(self) -> bytes | None:
        """Serialise operator state for the checkpoint (None when stateless)."""
        return None

    def restore(self, blob: bytes) -> None:  # noqa: B027 - stateless default
        """Restore operator state from a checkpoint."""

    def describe(self) -> dict[str, Any]:
        """A short description for status pages."""
        return {"type": self.name}
