"""Per-key state slots with bounded size: least-recently-seen keys are evicted beyond a limit.

Small per-key state lives in one float64 table (a row per slot, the named arrays are views of
its columns), so a batch gathers and scatters it with one indexing operation each; *bulk*
state (float32 ring buffers, float64 histograms) is read and written in place by slot, never
copied whole. Bulk
arrays start as zeros that the operating system maps lazily, page by page (a key only costs
the memory pages its values reach); they are reserved for ``max_keys`` slots up front where
that is affordable (growing the table then copies nothing), and are not cleared when a key is
evicted: their users only ever read what they wrote for the current key.

For incremental checkpoints the table tracks the slots changed since :meth:`KeyTable.clean`
(keys assigned, keys evicted) and how far the free-slot stack shrank meanwhile, so that
:meth:`KeyTable.export` can write only those slots and :meth:`KeyTable.apply` replay them.
"""

from __future__ import annotations

import mmap
from itertools import repeat
from typing import Any

import numpy as np

Spec = dict[str, tuple[tuple[int, ...], float]]
FEW_KEYS = 64  # up to this many rows, keys are factorized without Arrow
LAZY_BYTES = 1 << 22  # bulk arrays from this size are mapped page by page (see lazy_zeros)
RESERVE_BYTES = 1 << 31  # address space reserved up front for a bulk array at most


def lazy_zeros(shape: tuple[int, ...], dtype: type = np.float32) -> np.ndarray:
    """An array of zeros whose memory the operating system maps on first touch.

    Large ones are mapped without transparent huge pages where the platform allows it:
    otherwise the first write near each key's values commits (and clears) 2 MB around it,
    which makes the first batch of many keys touch the whole array.
    """
    size = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    no_huge = getattr(mmap, "MADV_NOHUGEPAGE", None)
    if size < LAZY_BYTES or no_huge is None:
        return np.zeros(shape, dtype=dtype)
    mapped = mmap.mmap(-1, size)
    mapped.madvise(no_huge)
    return np.frombuffer(mapped, dtype=dtype).reshape(shape)


def factorize(keys: np.ndarray | None, n: int) -> tuple[list[Any], np.ndarray]:
    """Distinct keys (as plain Python values, first seen first) and each row's index among them."""
    if keys is None:
        return [None], np.zeros(n, dtype=np.int64)
    arr = np.asarray(keys)
    if n <= FEW_KEYS:
        few = _factorize_few(arr)
        if few is not None:
            return few
    import pyarrow as pa

    try:
        if arr.dtype.kind in "iub":
            encoded = pa.array(arr).dictionary_encode()
        else:
            encoded = pa.array(
                arr.tolist() if arr.dtype.kind != "O" else arr, from_pandas=False
            ).dictionary_encode(null_encoding="encode")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        uniq, inv = np.unique(arr.astype(str), return_inverse=True)
        return uniq.tolist(), inv.reshape(-1)
    inv = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    return encoded.dictionary.to_pylist(), inv


def _factorize_few(arr: np.ndarray) -> tuple[list[Any], np.ndarray] | None:
    """:func:`factorize` of a few plain strings or integers with a dict (``None`` otherwise);
    the same distinct keys in the same order (first seen first) as Arrow's dictionary."""
    values = arr.tolist()
    if arr.dtype.kind not in "iub" and not all(type(v) is str for v in values):
        return None
    first: dict[Any, int] = {}
    inv = [first.setdefault(v, len(first)) for v in values]
    return list(first), np.array(inv, dtype=np.int64)


def _reserve(shape: tuple[int, ...], dtype: type) -> np.ndarray | None:
    """:func:`lazy_zeros` of ``shape``, or ``None`` if that is more than
    :data:`RESERVE_BYTES` or the system refuses to map it."""
    if int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize > RESERVE_BYTES:
        return None
    try:
        return lazy_zeros(shape, dtype)
    except (OSError, MemoryError, ValueError):
        return None


class PackedRows:
    """Named per-key arrays ((m,) or (size, m) each) packed one row per key, so that the
    values of some keys are gathered with one indexing operation."""

    def __init__(self, parts: dict[str, np.ndarray]) -> None:
        self._at: dict[str, int | slice] = {}
        blocks, width = [], 0
        for name, values in parts.items():
            block = values.reshape(-1, values.shape[-1])
            blocks.append(block)
            size = block.shape[0]
            self._at[name] = width if values.ndim == 1 else slice(width, width + size)
            width += size
        self.table = np.ascontiguousarray(np.concatenate(blocks).T)

    def gather(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The arrays of keys ``rows``, (len(rows),) or (size, len(rows)) each."""
        columns = np.ascontiguousarray(self.table[rows].T)
        return {name: columns[at] for name, at in self._at.items()}


class KeyTable:
    """Maps keys to rows of per-key state arrays; evicts the least recently seen keys."""

    def __init__(
        self,
        max_keys: int,
        spec: Spec,
        bulk: Spec | None = None,
        wide: frozenset[str] = frozenset(),
    ) -> None:
        self.max_keys = max_keys
        self.spec = spec
        self.bulk = bulk or {}
        # bulk arrays are float32 (ring buffers, bitsets) except the ``wide`` ones (float64)
        self.dtypes = {name: np.float64 if name in wide else np.float32 for name in self.bulk}
        self.columns: dict[str, tuple[int, int]] = {}
        self._at: dict[str, int | slice] = {}  # index of each name's columns in a table row
        width = 0
        for name, (shape, _) in spec.items():
            if len(shape) > 1:
                raise ValueError(f"per-key state {name!r} must be a scalar or a vector")
            size = int(np.prod(shape, dtype=np.int64))
            self.columns[name] = (width, width + size)
            self._at[name] = slice(width, width + size) if shape else width
            width += size
        self.fill = np.concatenate(
            [np.full(int(np.prod(shape, dtype=np.int64)), fill) for shape, fill in spec.values()]
        )
        self.cap = 0
        self.table = np.zeros((0, width))
        self.arrays: dict[str, np.ndarray] = {}
        self.bulk_arrays: dict[str, np.ndarray] = {}
        self.last_seen = np.zeros(0, dtype=np.int64)
        self.used = np.zeros(0, dtype=bool)
        self.slot_keys: list[Any] = []
        self.index: dict[Any, int] = {}
        self.free: list[int] = []
        self.tick = 0
        self.evicted = 0
        self.evicted_young = 0  # evicted before their state was warm (see assign's ``warm``)
        self.dirty = np.zeros(0, dtype=bool)  # slots changed since clean()
        self._free_low = 0  # the free stack's shortest length since clean()
        # bulk arrays for ``max_keys`` slots, mapped page by page as keys reach them: growing
        # takes a longer view instead of copying (absent where the mapping is refused)
        self._reserved = {
            name: _reserve((max_keys, *shape), self.dtypes[name])
            for name, (shape, _) in self.bulk.items()
        }
        self._grow(min(1024, max_keys))

    def __len__(self) -> int:
        return len(self.index)

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the reserved address space (only the slots in use are copied)."""
        state = self.__dict__.copy()
        state["_reserved"] = dict.fromkeys(self._reserved)
        return state

    def _views(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Named views of the columns of ``rows`` (a table or a gathered part of it)."""
        return {
            name: rows[:, a:b].reshape(rows.shape[0], *self.spec[name][0])
            for name, (a, b) in self.columns.items()
        }

    def _grow(self, new_cap: int) -> None:
        extra = new_cap - self.cap
        self.table = np.concatenate(
            [self.table, np.broadcast_to(self.fill, (extra, len(self.fill)))]
        )
        self.arrays = self._views(self.table)
        for name, (shape, _) in self.bulk.items():
            reserved = self._reserved.get(name)
            if reserved is not None:
                self.arrays[name] = reserved[:new_cap]
                continue
            grown = lazy_zeros((new_cap, *shape), self.dtypes[name])
            old = self.bulk_arrays.get(name)
            if old is not None:
                grown[: self.cap] = old
            self.arrays[name] = grown
        self.bulk_arrays = {name: self.arrays[name] for name in self.bulk}
        self.last_seen = np.concatenate([self.last_seen, np.zeros(extra, dtype=np.int64)])
        self.used = np.concatenate([self.used, np.zeros(extra, dtype=bool)])
        self.dirty = np.concatenate([self.dirty, np.zeros(extra, dtype=bool)])
        self.slot_keys.extend([None] * extra)
        self.free.extend(range(new_cap - 1, self.cap - 1, -1))
        self.cap = new_cap

    def distinct(self, keys: np.ndarray) -> int:
        """Number of distinct keys in ``keys``."""
        return len(factorize(keys, len(keys))[0])

    def assign(self, keys: np.ndarray | None, n: int, warm: float = 0.0) -> np.ndarray:
        """Slot of each row's key, creating slots (and evicting old keys) as needed; an evicted
        key whose ``count`` was below ``warm`` is counted in ``evicted_young``."""
        uniq, inv = factorize(keys, n)
        slots = np.fromiter(map(self.index.get, uniq, repeat(-1)), np.int64, len(uniq))
        self.tick += 1
        self.last_seen[slots[slots >= 0]] = self.tick
        new = np.flatnonzero(slots < 0)
        if new.size:
            self._make_room(int(new.size), warm)
            taken = self.free[-new.size :]
            del self.free[-new.size :]
            self._free_low = min(self._free_low, len(self.free))
            for i, slot in zip(new.tolist(), taken, strict=True):
                self.index[uniq[i]] = slot
                self.slot_keys[slot] = uniq[i]
            slots[new] = taken
            self.used[taken] = True
            self.last_seen[taken] = self.tick
        self.dirty[slots] = True
        return slots[inv]

    def _make_room(self, needed: int, warm: float = 0.0) -> None:
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
        if warm > 0.0 and "count" in self.arrays:
            self.evicted_young += int(np.count_nonzero(self.arrays["count"][victims] < warm))
        self.used[victims] = False
        self.dirty[victims] = True
        self.table[victims] = self.fill
        self.free.extend(victims[::-1].tolist())
        self.evicted += int(victims.size)

    def lookup(self, keys: np.ndarray | None, n: int) -> np.ndarray:
        """Slot of each row's key without creating any; unknown keys get virtual fresh slots."""
        uniq, inv = factorize(keys, n)
        slots = np.fromiter(map(self.index.get, uniq, repeat(-1)), np.int64, len(uniq))
        unknown = slots < 0
        slots[unknown] = self.cap + np.arange(int(unknown.sum()))
        return slots[inv]

    def gather(self, slots: np.ndarray) -> dict[str, np.ndarray]:
        """State of ``slots`` by name, one column per slot: (m,) or (size, m) (virtual slots
        beyond capacity read as fresh state)."""
        real = slots < self.cap
        rows = self.table[np.where(real, slots, 0)]
        if not real.all():
            rows[~real] = self.fill
        columns = np.ascontiguousarray(rows.T)
        return {name: columns[at] for name, at in self._at.items()}

    def scatter(self, slots: np.ndarray, state: dict[str, np.ndarray]) -> None:
        """Write back the final state of ``slots``."""
        m = slots.shape[0]
        columns = np.empty((self.table.shape[1], m))
        for name, (a, b) in self.columns.items():
            columns[a:b] = state[name].reshape(m, b - a).T
        self.table[slots] = columns.T

    def export(
        self, *, dirty: bool = False
    ) -> tuple[dict[str, np.ndarray], list[Any], dict[str, Any]]:
        """Arrays, slot keys and counters for a checkpoint: of every slot, or (``dirty``) only
        of the slots changed since :meth:`clean`, to be replayed by :meth:`apply`."""
        meta = {"tick": self.tick, "evicted": self.evicted, "evicted_young": self.evicted_young}
        if not dirty:
            arrays = {
                **self.arrays,
                "_last_seen": self.last_seen,
                "_free": np.array(self.free, dtype=np.int64),
                "_used": self.used,
            }
            return arrays, self.slot_keys, meta
        slots = np.flatnonzero(self.dirty)
        arrays = {name: values[slots] for name, values in self.arrays.items()}
        arrays.update(
            _slots=slots,
            _last_seen=self.last_seen[slots],
            _free=np.array(self.free[self._free_low :], dtype=np.int64),
            _used=self.used[slots],
        )
        meta.update(cap=self.cap, free_low=self._free_low)
        return arrays, [self.slot_keys[s] for s in slots.tolist()], meta

    @property
    def dirty_count(self) -> int:
        """How many slots changed since :meth:`clean`."""
        return int(np.count_nonzero(self.dirty))

    def clean(self) -> None:
        """Mark every slot as checkpointed (the next dirty export starts from here)."""
        self.dirty[:] = False
        self._free_low = len(self.free)

    def apply(self, arrays: dict[str, np.ndarray], keys: list[Any], meta: dict[str, Any]) -> None:
        """Replay a dirty :meth:`export` on the state it was taken after."""
        if int(meta["cap"]) > self.cap:
            self._grow(int(meta["cap"]))
        slots = np.asarray(arrays["_slots"], dtype=np.int64)
        for name in (*self.spec, *self.bulk):
            self.arrays[name][slots] = arrays[name]
        used = np.asarray(arrays["_used"], dtype=bool)
        listed = slots.tolist()
        for slot in listed:  # first forget the keys these slots held, then give the new ones
            old = self.slot_keys[slot]
            if old is not None and self.index.get(old) == slot:
                del self.index[old]
        for slot, key, held in zip(listed, keys, used.tolist(), strict=True):
            self.slot_keys[slot] = key if held else None
            if held:
                self.index[key] = slot
        self.used[slots] = used
        self.last_seen[slots] = arrays["_last_seen"]
        self.free[int(meta["free_low"]) :] = [int(v) for v in arrays["_free"]]
        self._set_counters(meta)

    def _set_counters(self, meta: dict[str, Any]) -> None:
        self.tick, self.evicted = int(meta["tick"]), int(meta["evicted"])
        self.evicted_young = int(meta.get("evicted_young", 0))
        self.clean()

    def restore(self, arrays: dict[str, np.ndarray], keys: list[Any], meta: dict[str, Any]) -> None:
        """Inverse of :meth:`export` (bulk arrays are adopted as they are, not copied)."""
        cap = len(keys)
        self.table = np.empty((cap, self.table.shape[1]))
        self.arrays = self._views(self.table)
        for name in self.spec:
            self.arrays[name][...] = arrays[name]
        for name in self.bulk:
            self.arrays[name] = np.asarray(arrays[name], dtype=self.dtypes[name])
            self._reserved[name] = None
        self.bulk_arrays = {name: self.arrays[name] for name in self.bulk}
        self.last_seen = np.array(arrays["_last_seen"], dtype=np.int64)
        self.free = [int(v) for v in arrays["_free"]]
        self.used = np.array(arrays["_used"], dtype=bool)
        self.slot_keys = list(keys)
        self.index = {k: i for i, k in enumerate(self.slot_keys) if self.used[i]}
        self.cap = cap
        self.dirty = np.zeros(cap, dtype=bool)
        self._set_counters(meta)
