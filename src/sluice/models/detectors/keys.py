"""Per-key state slots with bounded size: least-recently-seen keys are evicted beyond a limit.

Small per-key state is gathered for the keys of a batch and scattered back; *bulk* state
(float32 ring buffers) is read and written in place by slot, never copied whole.
"""

from __future__ import annotations

from typing import Any

import numpy as np

Spec = dict[str, tuple[tuple[int, ...], float]]


def factorize(keys: np.ndarray | None, n: int) -> tuple[list[Any], np.ndarray]:
    """Distinct keys (as plain Python values) and the index of each row's key among them."""
    if keys is None:
        return [None], np.zeros(n, dtype=np.int64)
    arr = np.asarray(keys)
    if arr.dtype.kind in "iub":
        uniq, inv = np.unique(arr, return_inverse=True)
        return uniq.tolist(), inv.reshape(-1)
    import pyarrow as pa

    try:
        encoded = pa.array(
            arr.tolist() if arr.dtype.kind != "O" else arr, from_pandas=False
        ).dictionary_encode(null_encoding="encode")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        uniq, inv = np.unique(arr.astype(str), return_inverse=True)
        return uniq.tolist(), inv.reshape(-1)
    inv = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    return encoded.dictionary.to_pylist(), inv


class KeyTable:
    """Maps keys to rows of per-key state arrays; evicts the least recently seen keys."""

    def __init__(self, max_keys: int, spec: Spec, bulk: Spec | None = None) -> None:
        self.max_keys = max_keys
        self.spec = spec
        self.bulk = bulk or {}
        self.cap = 0
        self.arrays: dict[str, np.ndarray] = {}
        self.last_seen = np.zeros(0, dtype=np.int64)
        self.used = np.zeros(0, dtype=bool)
        self.slot_keys: list[Any] = []
        self.index: dict[Any, int] = {}
        self.free: list[int] = []
        self.tick = 0
        self.evicted = 0
        self._grow(min(1024, max_keys))

    def __len__(self) -> int:
        return len(self.index)

    def _grow(self, new_cap: int) -> None:
        extra = new_cap - self.cap
        for name, (shape, fill) in self._all():
            dtype = np.float32 if name in self.bulk else np.float64
            block = (
                np.zeros((extra, *shape), dtype=dtype)
                if fill == 0.0
                else np.full((extra, *shape), fill, dtype=dtype)
            )
            old = self.arrays.get(name)
            self.arrays[name] = block if old is None else np.concatenate([old, block])
        self.last_seen = np.concatenate([self.last_seen, np.zeros(extra, dtype=np.int64)])
        self.used = np.concatenate([self.used, np.zeros(extra, dtype=bool)])
        self.slot_keys.extend([None] * extra)
        self.free.extend(range(new_cap - 1, self.cap - 1, -1))
        self.cap = new_cap

    def _all(self) -> list[tuple[str, tuple[tuple[int, ...], float]]]:
        return [*self.spec.items(), *self.bulk.items()]

    def distinct(self, keys: np.ndarray) -> int:
        """Number of distinct keys in ``keys``."""
        return len(factorize(keys, len(keys))[0])

    def assign(self, keys: np.ndarray | None, n: int) -> np.ndarray:
        """Slot of each row's key, creating slots (and evicting old keys) as needed."""
        uniq, inv = factorize(keys, n)
        slots = np.fromiter((self.index.get(k, -1) for k in uniq), np.int64, len(uniq))
        self.tick += 1
        self.last_seen[slots[slots >= 0]] = self.tick
        new = np.flatnonzero(slots < 0)
        if new.size:
            self._make_room(int(new.size))
            taken = self.free[-new.size :]
            del self.free[-new.size :]
            for i, slot in zip(new.tolist(), taken, strict=True):
                self.index[uniq[i]] = slot
                self.slot_keys[slot] = uniq[i]
            slots[new] = taken
            self.used[taken] = True
            self.last_seen[taken] = self.tick
        return slots[inv]

    def _make_room(self, needed: int) -> None:
        if needed > len(self.free) and self.cap < self.max_keys:
            self._grow(min(self.max_keys, max(2 * self.cap, self.cap + needed - len(self.free))))
        short = needed - len(self.free)
        if short <= 0:
            return
        used = np.flatnonzero(self.used)
        old = used[self.last_seen[used] < self.tick]
        victims = old[np.argsort(self.last_seen[old], kind="stable")[:short]]
        for slot in victims.tolist():
            del self.index[self.slot_keys[slot]]
            self.slot_keys[slot] = None
        self.used[victims] = False
        for name, (_, fill) in self._all():
            self.arrays[name][victims] = fill
        self.free.extend(victims[::-1].tolist())
        self.evicted += int(victims.size)

    def lookup(self, keys: np.ndarray | None, n: int) -> np.ndarray:
        """Slot of each row's key without creating any; unknown keys get virtual fresh slots."""
        uniq, inv = factorize(keys, n)
        slots = np.fromiter((self.index.get(k, -1) for k in uniq), np.int64, len(uniq))
        unknown = slots < 0
        slots[unknown] = self.cap + np.arange(int(unknown.sum()))
        return slots[inv]

    def gather(self, slots: np.ndarray) -> dict[str, np.ndarray]:
        """State rows for ``slots`` (virtual slots beyond capacity read as fresh state)."""
        real = slots < self.cap
        safe = np.where(real, slots, 0)
        out = {}
        for name, (_, fill) in self.spec.items():
            rows = self.arrays[name][safe]
            rows[~real] = fill
            out[name] = rows
        return out

    def scatter(self, slots: np.ndarray, state: dict[str, np.ndarray]) -> None:
        """Write back the final state of ``slots``."""
        for name in self.spec:
            self.arrays[name][slots] = state[name]

    def export(self) -> tuple[dict[str, np.ndarray], list[Any], dict[str, Any]]:
        """Arrays, slot keys and counters for a checkpoint."""
        arrays = {
            **self.arrays,
            "_last_seen": self.last_seen,
            "_free": np.array(self.free, dtype=np.int64),
            "_used": self.used,
        }
        meta = {"tick": self.tick, "evicted": self.evicted}
        return arrays, self.slot_keys, meta

    def restore(self, arrays: dict[str, np.ndarray], keys: list[Any], meta: dict[str, Any]) -> None:
        """Inverse of :meth:`export`."""
        self.arrays = {name: np.array(arrays[name]) for name, _ in self._all()}
        self.last_seen = np.array(arrays["_last_seen"], dtype=np.int64)
        self.free = [int(v) for v in arrays["_free"]]
        self.used = np.array(arrays["_used"], dtype=bool)
        self.slot_keys = list(keys)
        self.index = {k: i for i, k in enumerate(self.slot_keys) if self.used[i]}
        self.cap = len(self.slot_keys)
        self.tick, self.evicted = int(meta["tick"]), int(meta["evicted"])
