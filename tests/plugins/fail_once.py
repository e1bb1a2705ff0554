"""A model plugin whose first call anywhere fails: a Spark task that fails once, then succeeds.

Registered through ``sluice_test_plugins-0.1.dist-info`` (an entry point) when this folder
is on ``sys.path``; the marker file (option ``marker``) records that the failure happened.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from sluice.config.models import ModelConfig
from sluice.models.base import Model, ModelContext


class FailOnceModel(Model):
    """Scores ``feature * 2``; raises on its first non-empty batch ever (marker file)."""

    def __init__(self, config: ModelConfig, context: ModelContext) -> None:
        super().__init__(config, context)
        self.marker = Path(str(config.options["marker"]))

    def score(self, table: pa.Table) -> pa.Table:
        """The batch with ``NAME_score``; the very first non-empty call fails instead."""
        if table.num_rows and not self.marker.exists():
            self.marker.touch()
            raise RuntimeError("injected task failure")
        values = pc.multiply(table.column(self.config.features[0]), 2.0)
        return table.append_column(f"{self.name}_score", values.cast(pa.float64()))
