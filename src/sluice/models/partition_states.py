"""Scoring with an online detector that several partition tasks trained, one state each.

A Kafka pipeline runs one task per partition (see :mod:`sluice.runners.partitioned`), and each
task checkpoints its own ``online_anomaly`` state. Records with the same key go to the same
partition, so a key's history lives in exactly one of those states: a record is scored by the
state that has seen its key most, and a key none has seen (or a detector without a key) by
the state that has seen the most events.
"""

from __future__ import annotations

import numpy as np

from sluice.core.arrays import objects
from sluice.core.errors import ModelError
from sluice.models.detectors.keys import Keys, factorize
from sluice.models.online_anomaly import OnlineAnomalyDetector, ScoreResult


class PartitionStates:
    """Read-only scoring over the states of one online detector learned by several tasks."""

    def __init__(self, detectors: list[OnlineAnomalyDetector]) -> None:
        if not detectors:
            raise ModelError("no partition state to score with")
        self.detectors = detectors
        self._busiest = int(np.argmax([d.events for d in detectors]))

    @property
    def evicted_keys(self) -> int:
        """Keys dropped to stay within max_keys, over all partitions."""
        return sum(d.evicted_keys for d in self.detectors)

    @property
    def n_keys(self) -> int:
        """Keys holding state, over all partitions."""
        return sum(d.n_keys for d in self.detectors)

    def prepare(self) -> None:
        """Derive what scoring needs in every partition state now (see the detector's)."""
        for detector in self.detectors:
            detector.prepare()

    def owners(self, keys: Keys, n: int) -> np.ndarray:
        """Index of the detector that scores each row."""
        if keys is None:
            return np.full(n, self._busiest, dtype=np.int64)
        uniq, inv = factorize(keys, n)
        seen = np.full((len(self.detectors), len(uniq)), -1.0)
        for i, detector in enumerate(self.detectors):
            slots = np.array([detector.keys.index.get(k, -1) for k in uniq], dtype=np.int64)
            known = slots >= 0
            seen[i, known] = detector.keys.arrays["count"][slots[known]]
        owner = np.where(seen.max(axis=0) >= 0, seen.argmax(axis=0), self._busiest)
        return owner[inv]

    def score(self, keys: Keys, X: np.ndarray) -> ScoreResult:
        """Score rows, each by the partition state that knows its key, without learning."""
        X = np.asarray(X, dtype=np.float64)
        n = X.shape[0]
        if keys is not None and not isinstance(keys, np.ndarray):
            keys = objects(keys)  # split by row below
        owner = self.owners(keys, n)
        score, onset = np.zeros(n), np.zeros(n)
        anomaly = np.zeros(n, dtype=bool)
        reason = np.full(n, "", dtype=object)
        for i, detector in enumerate(self.detectors):
            rows = np.flatnonzero(owner == i)
            if rows.size == 0:
                continue
            found = detector.score(None if keys is None else keys[rows], X[rows])
            score[rows], anomaly[rows] = found.score, found.anomaly
            reason[rows], onset[rows] = found.reason, found.onset
        return ScoreResult(score, anomaly, reason, onset)

    def score_learn(self, keys: Keys, X: np.ndarray) -> ScoreResult:
        """Refused: partition states are learned by their own tasks, never here."""
        raise ModelError("an online model read from several partitions cannot learn")
