"""Prepare raw records for predict: the stateless steps that precede a model in its pipeline.

``sluice serve`` and ``sluice predict`` give this to the ``Predictor``; a record posted as it
is ingested (``temperature``) then reaches the model as its pipeline would give it
(``temp_c``). Rows a filter drops are answered as filtered.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pyarrow as pa

from sluice.config.models import TransformStep
from sluice.core.context import EpochContext
from sluice.core.errors import ModelError
from sluice.core.settings import Settings
from sluice.transforms.base import Transform
from sluice.transforms.build import build_transforms

ROW = "__predict_row"


class RecordPreparer:
    """Builds each model's steps once (rebuilt when they change) and applies them to records."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._built: dict[str, tuple[str, list[Transform]]] = {}
        self._lock = threading.Lock()

    def _transforms(self, model: str, steps: list[dict[str, Any]]) -> list[Transform]:
        marker = json.dumps(steps, sort_keys=True)
        with self._lock:
            kept = self._built.get(model)
            if kept is None or kept[0] != marker:
                parsed = [TransformStep.model_validate(s) for s in steps]
                built = build_transforms(parsed, event_time=None, settings=self.settings)
                kept = (marker, built)
                self._built[model] = kept
        return kept[1]

    def __call__(
        self, model: str, steps: list[dict[str, Any]], records: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[int]]:
        """``records`` after ``steps``, and the index in ``records`` of each row kept."""
        try:
            table = pa.Table.from_pylist(records)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise ModelError(f"records do not form a table: {exc}") from None
        table = table.append_column(ROW, pa.array(range(len(records)), pa.int64()))
        ctx = EpochContext(f"predict:{model}", 0)
        for transform in self._transforms(model, steps):
            table = transform.apply(table, ctx)
        if ctx.dead_letters:
            found = {str(r) for t in ctx.dead_letters for r in t.column("reason").to_pylist()}
            reasons = "; ".join(sorted(found))
            raise ModelError(f"the pipeline's steps before model {model!r} rejected: {reasons}")
        kept = [int(i) for i in table.column(ROW).to_pylist()]
        columns = [c for c in table.column_names if not c.startswith("__")]
        return table.select(columns).to_pylist(), kept
