"""Per-key state slots with bounded size: least-recently-seen keys are evicted beyond a limit.

Small per-key state lives in one float64 table (a row per slot, the named arrays are views of
its columns), so a batch gathers and scatters it with one indexing operation each; *bulk*
state (ring buffers, bitsets, histograms) is read and written in place by slot, never copied
whole. Bulk arrays start as zeros that the operating system maps lazily, page by page, so a
key only costs the memory pages its values reach: memory follows what keys have learned, not
how many there are. A bulk array may be laid out *position-major* (its first per-key axis
outermost, the slot next): a ring buffer's position ``t`` of every key is then contiguous, and
keys that hold a few values share pages instead of each touching one of its own. Bulk arrays
are reserved for ``max_keys`` slots up front (address space only, without swap accounting),
so growing the table copies nothing; they are not cleared when a key is evicted: their users
only ever read what they wrote for the current key.

For incremental checkpoints the table tracks the slots changed since :meth:`KeyTable.clean`
(keys assigned, keys evicted), each one's ``count`` when it first changed (``base``: what a
slot learned since is ``count - base`` events), and how far the free-slot stack shrank
meanwhile, so that :meth:`KeyTable.export` can write only those slots and
:meth:`KeyTable.apply` replay them. Bulk arrays are encoded by their owner (only the values a
key holds), not here.
"""

from __future__ import annotations

import mmap
import sys
from itertools import compress, repeat
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa

# the key of each row: a string column as Arrow (factorised without a Python object per row),
# or numpy values; None when the detector has no key
Keys: TypeAlias = "np.ndarray | pa.Array | None"

Spec = dict[str, tuple[tuple[int, ...], float]]
FEW_KEYS = 64  # up to this many rows, keys are factorized without Arrow
LAZY_BYTES = 1 << 22  # bulk arrays from this size are mapped page by page (see lazy_zeros)
RESERVE_BYTES = 1 << 37  # address space reserved up front for a bulk array at most
NOTED_MAX = 1 << 22  # positions of a bulk array noted between checkpoints at most
# Linux mmap flag: no swap space is set aside for the mapping (pages are committed on touch)
MAP_NORESERVE = 0x4000 if sys.platform.startswith("linux") else 0


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
    # private: reading a page never written maps the shared zero page (no memory)
    mapped = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | MAP_NORESERVE)
    mapped.madvise(no_huge)
    return np.frombuffer(mapped, dtype=dtype).reshape(shape)


def factorize(keys: Keys, n: int) -> tuple[list[Any], np.ndarray]:
    """Distinct keys (as plain Python values, first seen first) and each row's index among them."""
    if keys is None:
        return [None], np.zeros(n, dtype=np.int64)
    import pyarrow as pa

    from sluice.core.arrays import to_numpy

    if isinstance(keys, pa.Array):  # a string column, straight from the batch
        encoded = keys.dictionary_encode(null_encoding="encode")
        return encoded.dictionary.to_pylist(), to_numpy(encoded.indices).astype(np.int64)
    arr = np.asarray(keys)
    if n <= FEW_KEYS:
        few = _factorize_few(arr)
        if few is not None:
            return few
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


def bulk_zeros(slots: int, shape: tuple[int, ...], dtype: Any, major: bool) -> np.ndarray:
    """:func:`lazy_zeros` of ``slots`` rows of ``shape``, indexed by slot first; laid out
    position-major (``shape[0]`` outermost in memory) when ``major``."""
    if not major:
        return lazy_zeros((slots, *shape), dtype)
    return np.moveaxis(lazy_zeros((shape[0], slots, *shape[1:]), dtype), 1, 0)


def _reserve(slots: int, shape: tuple[int, ...], dtype: Any, major: bool) -> np.ndarray | None:
    """:func:`bulk_zeros`, or ``None`` if that is more than :data:`RESERVE_BYTES` or the
    system refuses to map it."""
    if slots * int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize > RESERVE_BYTES:
        return None
    try:
        return bulk_zeros(slots, shape, dtype, major)
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
        dtypes: dict[str, Any] | None = None,
        major: frozenset[str] = frozenset(),
    ) -> None:
        self.max_keys = max_keys
        self.spec = spec
        self.bulk = bulk or {}
        # bulk arrays are float32 unless ``dtypes`` says otherwise; ``major``: position-major
        self.dtypes = {name: (dtypes or {}).get(name, np.float32) for name in self.bulk}
        self.major = major
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
        self.base = np.zeros(0)  # each dirty slot's count when it first changed
        self._free_low = 0  # the free stack's shortest length since clean()
        # flat positions of bulk arrays written since clean() (see note); None: too many
        self._noted: dict[str, list[np.ndarray] | None] = {}
        # small state of the keys the last assign evicted, by name (for running summaries)
        self.evicted_rows: dict[str, np.ndarray] = {}
        # bulk arrays for ``max_keys`` slots, mapped page by page as keys reach them: growing
        # takes a longer view instead of copying (absent where the mapping is refused)
        self._reserved = {
            name: _reserve(max_keys, shape, self.dtypes[name], name in major)
            for name, (shape, _) in self.bulk.items()
        }
        # the table too (its rows are filled when a key takes them: growing touches nothing)
        self._rows = _reserve(max_keys, (width,), np.float64, False)
        self._grow(min(1024, max_keys))

    def __len__(self) -> int:
        return len(self.index)

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the reserved address space (only the slots in use are copied)."""
        state = self.__dict__.copy()
        state["_reserved"] = dict.fromkeys(self._reserved)
        state["_rows"] = None
        return state

    def _views(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Named views of the columns of ``rows`` (a table or a gathered part of it)."""
        return {
            name: rows[:, a:b].reshape(rows.shape[0], *self.spec[name][0])
            for name, (a, b) in self.columns.items()
        }

    def _grow(self, new_cap: int) -> None:
        extra = new_cap - self.cap
        if self._rows is not None and new_cap <= self._rows.shape[0]:
            self.table = self._rows[:new_cap]
        else:
            self.table = np.concatenate([self.table, np.zeros((extra, len(self.fill)))])
        self.arrays = self._views(self.table)
        for name in self.bulk:
            reserved = self._reserved.get(name)
            if reserved is not None:
                self.arrays[name] = reserved[:new_cap]
                continue
            grown = self.bulk_zeros(name, new_cap)
            old = self.bulk_arrays.get(name)
            if old is not None:
                grown[: self.cap] = old
            self.arrays[name] = grown
        self.bulk_arrays = {name: self.arrays[name] for name in self.bulk}
        self.last_seen = np.concatenate([self.last_seen, np.zeros(extra, dtype=np.int64)])
        self.used = np.concatenate([self.used, np.zeros(extra, dtype=bool)])
        self.dirty = np.concatenate([self.dirty, np.zeros(extra, dtype=bool)])
        self.base = np.concatenate([self.base, np.zeros(extra)])
        self.slot_keys.extend([None] * extra)
        self.free.extend(range(new_cap - 1, self.cap - 1, -1))
        self.cap = new_cap

    def bulk_zeros(self, name: str, slots: int) -> np.ndarray:
        """Fresh (lazily mapped) bulk array ``name`` of ``slots`` slots, in its layout."""
        return bulk_zeros(slots, self.bulk[name][0], self.dtypes[name], name in self.major)

    def distinct(self, keys: np.ndarray) -> int:
        """Number of distinct keys in ``keys``."""
        return len(factorize(keys, len(keys))[0])

    def assign(self, keys: Keys, n: int, warm: float = 0.0) -> np.ndarray:
        """Slot of each row's key, creating slots (and evicting old keys) as needed; an evicted
        key whose ``count`` was below ``warm`` is counted in ``evicted_young``."""
        uniq, inv = factorize(keys, n)
        slots = np.fromiter(map(self.index.get, uniq, repeat(-1)), np.int64, len(uniq))
        self.evicted_rows = {}
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
            self.table[taken] = self.fill
            self.used[taken] = True
            self.last_seen[taken] = self.tick
        first = slots[~self.dirty[slots]]
        if "count" in self.arrays:
            self.base[first] = self.arrays["count"][first]
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
        self.base[victims] = 0.0  # the slot's next key learns from nothing
        self.evicted_rows = self._views(self.table[victims])
        self.table[victims] = self.fill
        self.free.extend(victims[::-1].tolist())
        self.evicted += int(victims.size)

    def lookup(self, keys: Keys, n: int) -> np.ndarray:
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
        rows = np.empty((m, self.table.shape[1]))
        for name, (a, b) in self.columns.items():
            rows[:, a:b] = state[name].reshape(m, b - a)
        self.table[slots] = rows

    def export(
        self, *, dirty: bool = False
    ) -> tuple[dict[str, np.ndarray], list[Any], dict[str, Any]]:
        """Small state (``_table``: its rows), slot keys and counters for a checkpoint: of
        every slot, or (``dirty``) only of the slots changed since :meth:`clean` (``_slots``;
        ``_base``: each one's count when it first changed), to be replayed by :meth:`apply`.
        Bulk arrays are left to their owner."""
        meta = {"tick": self.tick, "evicted": self.evicted, "evicted_young": self.evicted_young}
        if not dirty:
            arrays = {
                "_table": self.table,
                "_last_seen": self.last_seen,
                "_free": np.array(self.free, dtype=np.int64),
                "_used": self.used,
            }
            return arrays, self.slot_keys, meta
        slots = np.flatnonzero(self.dirty)
        arrays = {"_table": self.table[slots]}
        arrays.update(
            _slots=slots,
            _base=self.base[slots],
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
        self._noted = {}

    def note(self, name: str, at: np.ndarray) -> None:
        """Record that flat positions ``at`` of bulk array ``name`` were written (for
        :meth:`noted`); past :data:`NOTED_MAX` positions they are no longer tracked."""
        parts = self._noted.setdefault(name, [])
        if parts is None:
            return
        parts.append(np.asarray(at, dtype=np.int64))
        if sum(part.shape[0] for part in parts) > NOTED_MAX:
            self._noted[name] = None

    def noted(self, name: str) -> np.ndarray | None:
        """Distinct flat positions of bulk array ``name`` written since :meth:`clean` (every
        write must have been noted), or ``None`` when there were too many to track."""
        parts = self._noted.get(name, [])
        if parts is None:
            return None
        merged = np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)
        self._noted[name] = [merged]
        return merged

    def _rows_of(self, arrays: dict[str, np.ndarray], count: int) -> np.ndarray:
        """The ``_table`` rows of an export, checked against this table's layout."""
        rows = np.asarray(arrays["_table"], dtype=np.float64)
        if rows.shape != (count, self.table.shape[1]):
            raise ValueError(f"state rows {rows.shape}, expected ({count}, {self.table.shape[1]})")
        return rows

    def apply(self, arrays: dict[str, np.ndarray], keys: list[Any], meta: dict[str, Any]) -> None:
        """Replay a dirty :meth:`export` on the state it was taken after (the small state;
        the owner writes the bulk arrays of ``_slots`` after this)."""
        if int(meta["cap"]) > self.cap:
            self._grow(int(meta["cap"]))
        slots = np.asarray(arrays["_slots"], dtype=np.int64)
        self.table[slots] = self._rows_of(arrays, slots.shape[0])
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
        """Inverse of :meth:`export`; bulk arrays start as zeros, for the owner to fill."""
        cap = len(keys)
        self._rows = _reserve(max(self.max_keys, cap), (self.table.shape[1],), np.float64, False)
        self.table = (
            np.empty((cap, self.table.shape[1])) if self._rows is None else self._rows[:cap]
        )
        self.table[...] = self._rows_of(arrays, cap)
        self.arrays = self._views(self.table)
        for name, (shape, _) in self.bulk.items():  # a fresh reservation: growing copies nothing
            size, major = max(self.max_keys, cap), name in self.major
            reserved = _reserve(size, shape, self.dtypes[name], major)
            self._reserved[name] = reserved
            self.arrays[name] = self.bulk_zeros(name, cap) if reserved is None else reserved[:cap]
        self.bulk_arrays = {name: self.arrays[name] for name in self.bulk}
        self.last_seen = np.array(arrays["_last_seen"], dtype=np.int64)
        self.free = [int(v) for v in arrays["_free"]]
        self.used = np.array(arrays["_used"], dtype=bool)
        self.slot_keys = list(keys)
        held = np.flatnonzero(self.used)
        self.index = dict(
            zip(compress(self.slot_keys, self.used.tolist()), held.tolist(), strict=True)
        )
        self.cap = cap
        self.dirty = np.zeros(cap, dtype=bool)
        self.base = np.zeros(cap)
        self._set_counters(meta)
