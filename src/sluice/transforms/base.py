"""The transform protocol: a step maps an Arrow table to an Arrow table, with checkpointed state."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import pyarrow as pa

from sluice.core.batch import empty_table
from sluice.core.context import EpochContext


class Transform(ABC):
    """One step of the pipeline between validation and the models.

    Capability flags the runner reads: ``holds_state`` (rows may stay buffered until
    ``finish``, e.g. windows) and ``replaces_stream`` (the output rows replace the input
    rows, e.g. a window without ``into``).
    """

    name: str = "transform"
    holds_state: bool = False
    replaces_stream: bool = False

    @abstractmethod
    def apply(self, table: pa.Table, ctx: EpochContext) -> pa.Table:
        """Transform one micro-batch; rejects go to ``ctx.dead_letter``."""

    def output_schema(self, schema: pa.Schema) -> pa.Schema | None:
        """Check the step against the columns flowing in; return the columns flowing out.

        Used by ``sluice validate``. The default runs the step on an empty batch of
        ``schema``; None means the output columns are not known before a run.
        """
        return self.apply(empty_table(schema), EpochContext("validate", 0)).schema

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
