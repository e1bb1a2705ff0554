"""``online_anomaly``: the built-in streaming detector as a pipeline model."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from sluice.config.models import ModelConfig
from sluice.core.arrays import floats, from_numpy, strings
from sluice.core.errors import ConfigError, ModelError
from sluice.models.base import Model, ModelContext
from sluice.models.state_log import StateLog
from sluice.storage.checkpoints import State

if TYPE_CHECKING:
    from sluice.models.online_anomaly import OnlineAnomalyDetector
    from sluice.models.partition_states import PartitionStates

_TUNABLES = (
    "warmup",
    "horizon",
    "target_alert_rate",
    "max_keys",
    "season_window",
    "quiet_horizon",
    "calibration_horizon",
    "calibration_events",
)
log = logging.getLogger("sluice.models")


def feature_matrix(table: pa.Table, features: list[str]) -> np.ndarray:
    """Stack ``features`` of ``table`` into a float64 matrix (nulls become NaN)."""
    missing = [f for f in features if f not in table.column_names]
    if missing:
        raise ModelError(f"missing feature column(s): {', '.join(missing)}")
    columns = []
    for name in features:
        col = table.column(name)
        if not (
            pa.types.is_floating(col.type)
            or pa.types.is_integer(col.type)
            or pa.types.is_boolean(col.type)
        ):
            raise ModelError(f"feature {name!r} is {col.type}, not numeric")
        columns.append(floats(col))
    if not columns:
        return np.empty((table.num_rows, 0))
    return np.column_stack(columns)


class OnlineAnomalyModel(Model):
    """Streaming, per-key, multivariate anomaly detection that adapts as data changes."""

    online = True

    def __init__(self, config: ModelConfig, context: ModelContext) -> None:
        super().__init__(config, context)
        from sluice.models.online_anomaly import OnlineAnomalyConfig, OnlineAnomalyDetector

        if not config.features:
            raise ConfigError(f"model {config.name!r}: online_anomaly needs 'features'")
        options = config.options
        unknown = set(options) - set(_TUNABLES)
        if unknown:
            raise ConfigError(
                f"model {config.name!r}: unknown option(s) {', '.join(sorted(unknown))}"
                f"; available: {', '.join(_TUNABLES)}"
            )
        self.detector: OnlineAnomalyDetector | PartitionStates = OnlineAnomalyDetector(
            OnlineAnomalyConfig(features=list(config.features), key=config.key, **options)
        )
        self._log = StateLog()
        self._warned_lost = False

    def score(self, table: pa.Table) -> pa.Table:
        """Score and learn from ``table`` in event order."""
        table = self.apply(table, learn=True)
        if not self._warned_lost and self.lost_keys():
            self._warned_lost = True
            log.warning(
                "model %r: keys are evicted before they warm up (%s so far), so they learn "
                "nothing; raise max_keys (now %s) above the number of active keys",
                self.name,
                self.lost_keys(),
                self._single().config.max_keys,
            )
        return table

    def apply(self, table: pa.Table, *, learn: bool) -> pa.Table:
        """Score ``table``; update the state only when ``learn``."""
        X = feature_matrix(table, self.config.features)
        keys = None
        if self.config.key:
            if self.config.key not in table.column_names:
                raise ModelError(f"missing key column {self.config.key!r}")
            column = table.column(self.config.key)
            keys = (
                column.combine_chunks()  # factorised by Arrow (see detectors.keys.factorize)
                if pa.types.is_string(column.type)
                else column.to_numpy(zero_copy_only=False)
            )
        result = (self.detector.score_learn if learn else self.detector.score)(keys, X)
        prefix = self.name
        score, onset = (np.asarray(v, np.float64) for v in (result.score, result.onset))
        table = table.append_column(f"{prefix}_score", from_numpy(score))
        table = table.append_column(
            f"{prefix}_anomaly", from_numpy(np.asarray(result.anomaly, bool))
        )
        table = table.append_column(f"{prefix}_onset", from_numpy(onset))
        return table.append_column(f"{prefix}_reason", strings(np.asarray(result.reason, object)))

    def state(self) -> State:
        """The detector's learned state: a snapshot, or the keys changed since the last one.

        The keys count as clean from here (the runner may score the next epoch before this
        one commits); a checkpoint that fails ends the run, whose restart restores.
        """
        detector = self._single()
        state = self._log.next(detector.get_state, lambda: detector.get_state(dirty=True))
        detector.keys.clean()
        return state

    def committed(self) -> None:
        """The last ``state()`` is checkpointed: the snapshot/delta decision takes effect."""
        self._log.committed()

    def lost_keys(self) -> int:
        """Keys evicted before they had ``warmup`` events."""
        return self._single().keys.evicted_young

    def restore(self, blob: bytes) -> None:
        """Restore the detector's learned state (a snapshot)."""
        self._single().set_state(blob)
        self._log.restored(blob, [])

    def restore_deltas(self, deltas: list[bytes]) -> None:
        """Replay the deltas committed after the snapshot, in order."""
        detector = self._single()
        for delta in deltas:
            detector.set_state(delta)
        if self._log.snapshot_bytes is not None:
            self._log.delta_bytes = sum(len(d) for d in deltas)
            self._log.deltas = len(deltas)

    def restore_partitions(self, states: list[tuple[bytes, list[bytes]]]) -> None:
        """Score (without learning) with the states (snapshot, deltas) several partition
        tasks learned."""
        from sluice.models.online_anomaly import OnlineAnomalyDetector
        from sluice.models.partition_states import PartitionStates

        if len(states) == 1:
            self.restore(states[0][0])
            self.restore_deltas(states[0][1])
            return
        detectors = []
        for blob, deltas in states:
            detector = OnlineAnomalyDetector(self._single().config)
            for part in (blob, *deltas):
                detector.set_state(part)
            detectors.append(detector)
        self.detector = PartitionStates(detectors)

    def _single(self) -> OnlineAnomalyDetector:
        from sluice.models.partition_states import PartitionStates

        if isinstance(self.detector, PartitionStates):
            raise ModelError(f"model {self.name!r} holds several partitions' states")
        return self.detector

    def describe(self) -> dict[str, Any]:
        """Type, features and state size."""
        return {
            **super().describe(),
            "features": self.config.features,
            "evicted_keys": self.detector.evicted_keys,
            "evicted_unwarmed_keys": sum(
                d.keys.evicted_young for d in getattr(self.detector, "detectors", [self.detector])
            ),
        }
