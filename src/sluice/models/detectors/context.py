"""Context novelty, after the contextual anomaly detector (CAD OSE) of NAB's scoreboard: has
this key ever shown this short pattern of coarsely quantised values?

Each value is quantised into one of :data:`BINS` equal bins of the range its key has shown
before it, or into one of two more symbols when it lies above or below that range (a new
extreme). The symbols of a key's last :data:`LENGTH` values form its *context*; each key
remembers every context it has shown, per feature, in a bitset of ``SYMBOLS ** LENGTH`` bits
(stored as 16-bit words). An event is *novel* when the
context of one of its features was never shown before. Where a key showed no novel context
within its last :data:`RECENT` events, the onset score is damped by :data:`FAMILIAR`: a spike or
a dip of a shape the key has shown before is not a new incident. Missing values are skipped
(they neither form nor break a context). Everything follows each key's own sequence, so
results do not depend on how a stream is cut into batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sluice.models.detectors.scan import Segments, ew_scan, last_valid, run_length, running_max

BINS = 6
LENGTH = 4
SYMBOLS = BINS + 2  # the bins, then "above the range" and "below the range"
BITS = 3  # per symbol in a context code (SYMBOLS == 2 ** BITS)
CONTEXTS = SYMBOLS**LENGTH
WORD = 16  # bits per stored word
WORD_BITS = 4  # WORD == 2 ** WORD_BITS
WORDS = CONTEXTS // WORD
RECENT = 20  # events after a novel context during which onsets keep their full score
FAMILIAR = 0.8  # factor on the onset score of an event without a recent novel context
# per feature: range seen (low, high), values seen, last LENGTH - 1 symbols (base SYMBOLS)
CONTEXT_STATE = ("clo", "chi", "cn", "ch")
SINCE_STATE = "cs"  # per key: events since its last novel context


@dataclass
class BitUpdate:
    """Bits a chunk sets in the key table's context bitsets (written when learning)."""

    bits: np.ndarray  # the key table's bitsets (slots, p, WORDS), uint16
    clear: np.ndarray  # slots of keys without history: their (stale) bitsets are cleared
    at: np.ndarray  # flat index of each changed word in ``bits``
    value: np.ndarray  # its new value

    def write(self) -> None:
        """Store the chunk's new contexts."""
        if self.clear.size:
            self.bits[self.clear] = 0
        np.put(self.bits, self.at, self.value)


@dataclass
class ContextResult:
    """Events whose onset is damped (n,), novel events (n,), final state, the bit update."""

    familiar: np.ndarray
    novel: np.ndarray
    state: dict[str, np.ndarray]
    update: BitUpdate | None  # None when scored without learning


def context_scores(
    X: np.ndarray,
    segs: Segments,
    init: dict[str, np.ndarray],
    fresh: np.ndarray,
    bits: np.ndarray,
    stale: bool = True,
    learn: bool = True,
) -> ContextResult:
    """Context novelty of a key-sorted chunk ``X`` (p, n).

    ``init`` holds each segment's state (``(p, m)`` per feature, ``(m,)`` for the key);
    ``fresh`` (m,) marks keys without history; ``bits`` is the key table's bitsets (a slot
    beyond it is a key not in the table). ``stale``: the slots of fresh keys may hold an
    evicted key's bits, to be cleared. Without ``learn`` the result has no bit update.
    """
    valid = np.isfinite(X)
    state: dict[str, np.ndarray] = {}
    code, full = _codes(X, valid, segs, init, state)
    p, n = X.shape
    known = (segs.slot < bits.shape[0]) & ~fresh
    # (key slot, feature) of every event, and its context's bitset word there
    row = np.where(known, segs.slot, 0)[segs.seg] * p + np.arange(p)[:, None]
    stored = np.take(bits, row * WORDS + (code >> WORD_BITS))
    stored = np.where(known[segs.seg], stored, 0).astype(np.int32)
    f, i = np.nonzero(full & ((stored >> (code & (WORD - 1))) & 1 == 0))
    if segs.single and not learn:
        # one event per key, nothing to store: each unseen context is its key's first
        novel = np.zeros(n, dtype=bool)
        novel[i] = True
        since, state[SINCE_STATE] = run_length(~novel, segs, init[SINCE_STATE])
        return ContextResult(since >= RECENT, novel, state, None)
    flat = f * n + i
    ctx = (segs.seg[i] * p + f) * CONTEXTS + code.reshape(-1)[flat]
    ctx, flat = _sorted(ctx, flat, segs.m * p * CONTEXTS, p * n)
    # a context new to the key is novel at its first event in the chunk only
    head = np.ones(ctx.shape, dtype=bool)
    head[1:] = ctx[1:] != ctx[:-1]
    novel_value = np.zeros(p * n, dtype=bool)
    novel_value[flat[head]] = True
    novel = np.logical_or.reduce(novel_value.reshape(p, n), axis=0)
    since, state[SINCE_STATE] = run_length(~novel, segs, init[SINCE_STATE])
    update = _update(bits, segs, fresh & stale, ctx, stored.reshape(-1)[flat])
    return ContextResult(since >= RECENT, novel, state, update)


def _codes(
    X: np.ndarray,
    valid: np.ndarray,
    segs: Segments,
    init: dict[str, np.ndarray],
    state: dict[str, np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Context code of every event (p, n; :data:`BITS` bits per symbol, the newest lowest),
    whether it is a full context of a valid value, and the final per-feature state into
    ``state``."""
    seen = init["cn"] > 0
    lo, hi, state["clo"], state["chi"] = _running_range(
        X, segs, np.where(seen, init["clo"], np.nan), np.where(seen, init["chi"], np.nan)
    )
    width = hi - lo
    with np.errstate(invalid="ignore"):
        spread = width > 0
        b = np.subtract(X, lo)
        b /= np.where(spread, width, 1.0)
        b *= BINS
        np.floor(b, out=b)
        np.clip(b, 0.0, BINS - 1.0, out=b)
        np.copyto(b, 0.0, where=~spread)
        np.copyto(b, BINS + 1.0, where=np.less(X, lo))
        # above the range, or no range yet (NaN bounds)
        np.copyto(b, float(BINS), where=~np.less_equal(X, hi))
        q = b.astype(np.int16)  # symbols and codes fit in 16 bits (less memory to stream)
    held = init["ch"].astype(np.int16)
    everywhere = bool(valid.all())
    if everywhere:  # no value to skip: the previous symbols are the previous events'
        count = init["cn"][:, segs.seg] + segs.offset
        state["cn"] = init["cn"] + segs.lengths
    else:
        count, state["cn"] = ew_scan(valid.astype(np.float64), 1.0, segs, init["cn"])
    recent_mask = SYMBOLS ** (LENGTH - 1) - 1
    if segs.single:  # one event per key: its older symbols are all its key's last ones
        code = q | ((held & recent_mask) << BITS)
    else:
        code, older = q, q
        for i in range(1, LENGTH):
            last = (held >> (BITS * (i - 1))) & (SYMBOLS - 1)
            older = (
                segs.shift(older, last) if everywhere else last_valid(older, valid, segs, last)[0]
            )
            code = code | (older << (BITS * i))
    recent = code & recent_mask
    if everywhere:
        state["ch"] = recent[:, segs.last].astype(np.float64)
    else:
        state["ch"] = last_valid(recent, valid, segs, held)[1].astype(np.float64)
    return code, valid & (count + 1 >= LENGTH)


def _running_range(
    X: np.ndarray, segs: Segments, lo0: np.ndarray, hi0: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Lowest and highest valid value of the same key before each event (NaN: none yet), and
    after each segment (``lo0``/``hi0`` (p, m) before the chunk)."""
    p = X.shape[0]
    both = np.concatenate([-X, X])  # running maxima of -x and x
    before, end = running_max(both, segs, np.concatenate([-lo0, hi0]))
    return -before[:p], before[p:], -end[:p], end[p:]


def _sorted(
    ctx: np.ndarray, flat: np.ndarray, ctx_end: int, flat_end: int
) -> tuple[np.ndarray, np.ndarray]:
    """``ctx`` and ``flat`` (non-negative, below ``ctx_end`` and ``flat_end``) sorted by
    ``(ctx, flat)``: both packed in one integer, sorted by value (no index gathers)."""
    shift = max(flat_end - 1, 1).bit_length()
    if ctx_end >= 1 << (62 - shift):  # would not fit in 63 bits
        order = np.lexsort((flat, ctx))
        return ctx[order], flat[order]
    packed = np.sort((ctx << shift) | flat)
    return packed >> shift, packed & ((1 << shift) - 1)


def _update(
    bits: np.ndarray, segs: Segments, clear: np.ndarray, ctx: np.ndarray, stored: np.ndarray
) -> BitUpdate:
    """The stored words that gain the chunk's new contexts: ``ctx`` sorted (segment, feature,
    context) ids and ``stored`` their words before the chunk."""
    word = ctx >> WORD_BITS  # (segment * p + feature) * WORDS + word: sorted as well
    starts = np.flatnonzero(np.concatenate([[True], word[1:] != word[:-1]]))
    if ctx.size:
        value = np.bitwise_or.reduceat(np.left_shift(1, ctx & (WORD - 1)), starts)
        value |= stored[starts]
    else:
        starts, value = starts[:0], stored
    inside = segs.slot < bits.shape[0]
    # the same word of the key's slot instead of its segment
    word = word[starts]
    seg = word // (bits.shape[1] * WORDS)
    at = word + (segs.slot[seg] - seg) * (bits.shape[1] * WORDS)
    return BitUpdate(bits, segs.slot[clear & inside], at, value.astype(bits.dtype))
