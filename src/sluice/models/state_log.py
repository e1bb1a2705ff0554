"""Incremental checkpoints of a model's per-key state: a snapshot, then a log of deltas.

Each epoch a model that supports it checkpoints only the keys the epoch changed (a
:class:`~sluice.storage.checkpoints.StateDelta`, appended to the operator's delta log);
a full snapshot replaces the log when the deltas written since the last one add up to the
snapshot's size (or there are :data:`MAX_DELTAS` of them). The cost of an epoch's
checkpoint is then proportional to the keys it touched, and a snapshot of ``K`` keys is
written at most once per ``K`` keys' worth of deltas, so restoring replays at most about
twice the state. Decisions take effect when the checkpoint commits (``committed``): an
epoch whose checkpoint failed is covered by the next one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sluice.storage.checkpoints import StateDelta

MAX_DELTAS = 1000  # deltas replayed on restore at most


@dataclass
class _Pending:
    snapshot: bool
    size: int


class StateLog:
    """Chooses, per checkpoint, between a full snapshot and a delta of the changed keys."""

    def __init__(self, max_deltas: int = MAX_DELTAS) -> None:
        self.max_deltas = max_deltas
        self.snapshot_bytes: int | None = None  # None: no committed snapshot this run
        self.delta_bytes = 0
        self.deltas = 0
        self._pending: _Pending | None = None

    def restored(self, snapshot: bytes, deltas: list[bytes]) -> None:
        """Account for the snapshot and deltas a restore replayed."""
        self.snapshot_bytes = len(snapshot)
        self.delta_bytes = sum(len(d) for d in deltas)
        self.deltas = len(deltas)

    def next(self, full: Callable[[], bytes], delta: Callable[[], bytes]) -> bytes | StateDelta:
        """This epoch's checkpoint: ``full()`` (a snapshot) or ``StateDelta(delta())``."""
        if (
            self.snapshot_bytes is None
            or self.delta_bytes >= self.snapshot_bytes
            or self.deltas >= self.max_deltas
        ):
            blob = full()
            self._pending = _Pending(snapshot=True, size=len(blob))
            return blob
        data = delta()
        self._pending = _Pending(snapshot=False, size=len(data))
        return StateDelta(data)

    def committed(self) -> bool:
        """The last ``next`` is committed; True when there was one (the model is clean now)."""
        pending, self._pending = self._pending, None
        if pending is None:
            return False
        if pending.snapshot:
            self.snapshot_bytes, self.delta_bytes, self.deltas = pending.size, 0, 0
        else:
            self.delta_bytes += pending.size
            self.deltas += 1
        return True
