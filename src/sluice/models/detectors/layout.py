"""Where each event of a batch sits once grouped by key: the layout every segmented scan walks.

A key's events form a *segment*. Two layouts are used:

* **contiguous** - each segment's events are adjacent, in arrival order (segments by slot).
  Scans run as one IIR filter over the whole batch plus a per-segment correction, which suits
  few keys with many events each.
* **mixed** - with many keys, most of which have few events in the batch, segments are ranked
  by length (longest first) and the first ``head`` events of every segment are stored
  *position-major*: block ``t`` holds the ``t``-th event of every segment that has one, so the
  active segments of a block are a prefix of the ranking. A scan then steps through the blocks,
  each step vectorised over keys. Events past ``head`` (the long segments only) follow in a
  contiguous *tail* layout, scanned as above from the state the blocks left.

Within a segment, positions increase with the event index in both layouts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np

# a block is worth a vectorised step while at least this many keys have an event in it
MIN_BLOCK_KEYS = 64


@dataclass
class Segments:
    """Layout of a key-grouped batch (see the module docstring)."""

    order: np.ndarray  # batch row of each position
    slot: np.ndarray  # state slot of each segment
    seg: np.ndarray  # segment of each position
    offset: np.ndarray  # index of each position's event inside its segment (0-based)
    start: np.ndarray  # position of each segment's first event
    last: np.ndarray  # position of each segment's last event
    lengths: np.ndarray  # events of each segment
    blocks: list[tuple[int, int]] = field(default_factory=list)  # head blocks [a, b)
    tail: Segments | None = None  # contiguous layout of the positions after the head blocks
    _walk: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def from_slots(cls, slots: np.ndarray, min_block: int = MIN_BLOCK_KEYS) -> Segments:
        """Group batch rows by slot, keeping arrival order inside each group."""
        order = _by_slot(slots)
        return cls.from_sorted(slots[order], order, min_block)

    @classmethod
    def from_sorted(
        cls, s: np.ndarray, order: np.ndarray, min_block: int = MIN_BLOCK_KEYS
    ) -> Segments:
        """Layout of rows ``order`` whose slots ``s`` are already grouped (sorted by slot)."""
        n = s.shape[0]
        if n == 1 or (n and bool((s[1:] != s[:-1]).all())):
            # one event per key: one block, each scan is a single step
            ids = np.arange(n)
            return cls(
                order, s, ids, np.zeros(n, np.int64), ids, ids, np.ones(n, np.int64), [(0, n)]
            )
        base = cls._contiguous(s, order)
        m = base.lengths.shape[0]
        if m < min_block:
            return base
        # active[t]: segments with more than t events
        active = m - np.cumsum(np.bincount(base.lengths))[:-1]
        head = int(np.count_nonzero(active >= min_block))
        return base._mixed(head, active[:head])

    @classmethod
    def _contiguous(cls, s: np.ndarray, order: np.ndarray) -> Segments:
        n = s.shape[0]
        is_start = np.ones(n, dtype=bool)
        if n:
            is_start[1:] = s[1:] != s[:-1]
        start = np.flatnonzero(is_start)
        seg = np.cumsum(is_start) - 1
        last = np.append(start[1:] - 1, n - 1) if n else start
        offset = np.arange(n) - start[seg] if n else np.zeros(0, dtype=np.int64)
        return cls(order, s[start] if n else s, seg, offset, start, last, last - start + 1)

    def _mixed(self, head: int, active: np.ndarray) -> Segments:
        """This contiguous layout rearranged with ``head`` position-major blocks."""
        m = self.lengths.shape[0]
        rank = np.lexsort((self.slot, -self.lengths))
        new_id = np.empty(m, dtype=np.int64)
        new_id[rank] = np.arange(m)
        lengths = self.lengths[rank]
        bounds = np.concatenate([[0], np.cumsum(active)])
        n_tail = int(np.count_nonzero(lengths > head))
        tail_len = lengths[:n_tail] - head
        tail_start = np.zeros(m, dtype=np.int64)
        tail_start[:n_tail] = bounds[head] + np.cumsum(tail_len) - tail_len
        s, o = new_id[self.seg], self.offset
        pos = np.where(o < head, bounds[np.minimum(o, head - 1)] + s, tail_start[s] + o - head)
        n = self.order.shape[0]
        order, seg, offset = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64)
        order[pos], seg[pos], offset[pos] = self.order, s, o
        ids = np.arange(m)
        last = np.where(
            lengths <= head,
            bounds[np.minimum(lengths, head) - 1] + ids,
            tail_start + lengths - head - 1,
        )
        tail = None
        if n_tail:
            first = int(bounds[head])
            t_start = tail_start[:n_tail] - first
            tail = Segments(
                order[first:],
                self.slot[rank][:n_tail],
                seg[first:],
                offset[first:] - head,
                t_start,
                t_start + tail_len - 1,
                tail_len,
            )
        blocks = list(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True))
        return Segments(order, self.slot[rank], seg, offset, ids, last, lengths, blocks, tail)

    @property
    def n(self) -> int:
        """Number of events."""
        return int(self.order.shape[0])

    @property
    def m(self) -> int:
        """Number of segments."""
        return int(self.lengths.shape[0])

    @property
    def single(self) -> bool:
        """Whether every segment holds one event (position ``i`` is segment ``i``)."""
        return self.order.shape[0] == self.lengths.shape[0]

    @property
    def tail_from(self) -> int:
        """First position of the tail (after the head blocks)."""
        return self.blocks[-1][1] if self.blocks else 0

    def walk(self) -> tuple[np.ndarray, np.ndarray]:
        """Every position, segment by segment in event order, and where each segment's run
        of them starts (m + 1 bounds): the order in which a per-key loop visits the batch."""
        if self._walk is None:
            bounds = np.zeros(self.m + 1, dtype=np.int64)
            np.cumsum(self.lengths, out=bounds[1:])
            order = np.empty(self.n, dtype=np.int64)
            order[bounds[self.seg] + self.offset] = np.arange(self.n)
            self._walk = (order, bounds)
        return self._walk

    def position(self, seg: np.ndarray, offset: np.ndarray) -> np.ndarray:
        """Position of event ``offset`` of segment ``seg`` (both arrays, offsets in range)."""
        if not self.blocks:
            return self.start[seg] + offset
        head = len(self.blocks)
        out = np.empty(seg.shape, dtype=np.int64)
        early = offset < head
        starts = np.array([a for a, _ in self.blocks], dtype=np.int64)
        out[early] = starts[offset[early]] + seg[early]
        if self.tail is not None:
            late = ~early
            out[late] = self.tail_from + self.tail.start[seg[late]] + offset[late] - head
        return out

    def first(self, mask: np.ndarray) -> np.ndarray:
        """Position of each segment's first event where ``mask`` (p, n) holds, else ``n``."""
        n = self.n
        if self.single:
            return np.where(mask, np.arange(n), n)
        idx = np.where(mask, np.arange(n), n)
        if not self.blocks:
            return np.minimum.reduceat(idx, self.start, axis=1)
        out = np.full((mask.shape[0], self.m), n, dtype=np.int64)
        rows = np.broadcast_to(np.arange(mask.shape[0])[:, None], mask.shape)
        np.minimum.at(out, (rows, np.broadcast_to(self.seg, mask.shape)), idx)
        return out

    def shift(self, values: np.ndarray, init: np.ndarray) -> np.ndarray:
        """Value of the previous event of the same key (``init`` for a segment's first event)."""
        if self.single:
            return np.array(init, dtype=values.dtype)
        out = np.empty_like(values)
        if not self.blocks:
            out[..., 1:] = values[..., :-1]
            out[..., self.start] = init
            return out
        a0, b0 = self.blocks[0]
        out[..., a0:b0] = init
        for (pa, _), (a, b) in zip(self.blocks[:-1], self.blocks[1:], strict=True):
            out[..., a:b] = values[..., pa : pa + b - a]
        if self.tail is not None:
            first, k = self.tail_from, self.tail.m
            before = values[..., self.blocks[-1][0] : self.blocks[-1][0] + k]
            out[..., first:] = self.tail.shift(values[..., first:], before)
        return out


def _by_slot(slots: np.ndarray) -> np.ndarray:
    """Rows sorted by slot, arrival order kept within a slot."""
    n = slots.shape[0]
    if n and np.all(slots == slots[0]):
        return np.arange(n)
    if n and slots.min() >= 0 and slots.max() <= np.iinfo(np.uint16).max:
        slots = slots.astype(np.uint16)  # numpy radix-sorts 16-bit keys: the same order, faster
    return np.argsort(slots, kind="stable")


def split(slots: np.ndarray, size: int) -> list[Segments]:
    """The batch cut into chunks of whole keys of about ``size`` events, each with its layout.

    A chunk's ``order`` holds batch rows. Chunks keep each intermediate array small enough to
    stay in the CPU cache, which makes the element-wise work several times faster.
    """
    order = _by_slot(slots)
    s = slots[order]
    n = s.shape[0]
    if n <= size:
        return [Segments.from_sorted(s, order)]
    starts = np.flatnonzero(np.append(True, s[1:] != s[:-1]))
    at = np.minimum(np.searchsorted(starts, np.arange(size, n, size)), starts.shape[0] - 1)
    cuts = np.unique(np.concatenate([[0], starts[at], [n]])).tolist()
    return [Segments.from_sorted(s[a:b], order[a:b]) for a, b in pairwise(cuts)]
