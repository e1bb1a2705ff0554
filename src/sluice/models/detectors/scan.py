"""Segmented (per-key) causal scans over a key-grouped batch, without a per-event loop.

Each scan carries a per-key recurrence through the batch laid out by
:class:`~sluice.models.detectors.layout.Segments`. In a contiguous layout, exponentially
weighted sums ``y_t = d * y_{t-1} + v_t`` run key by key in a compiled loop in either layout
(exact: no value of one key leaks into another's sums, so the result does not depend on which
keys share a batch); the other scans use cumulative maxima of event indexes. In a mixed
layout, the head blocks are stepped through (each step vectorised over keys) and the tail is
scanned as a contiguous layout from the state the blocks left.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np

from sluice.models.detectors.layout import Segments

__all__ = [
    "ScanGroup",
    "Segments",
    "decayed_max",
    "ew_scan",
    "ew_scan_stacked",
    "ew_scans",
    "last_valid",
    "latch",
    "run_length",
    "running_max",
]

# rows (each (r, n) or (n,)), their decay, and their initial states ((r, m) or (m,))
ScanGroup = tuple[list[np.ndarray], float, list[np.ndarray]]


def ew_scan(
    v: np.ndarray, decay: float | np.ndarray, segs: Segments, init: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-key ``y_t = decay * y_{t-1} + v_t`` over rows of ``v`` (r, n).

    ``decay`` is one factor or one per row. Returns the state *before* each event (r, n) and
    each segment's final state (r, m).
    """
    if segs.single:
        d = np.asarray(decay, dtype=np.float64)
        return np.array(init, dtype=np.float64), init * (d[:, None] if d.ndim else d) + v
    return _ew_walk(v, decay, segs, init)


def ew_scans(groups: list[ScanGroup], segs: Segments) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Several groups of rows through :func:`ew_scan` in one pass: per row, the state before
    each event and each segment's final state."""
    inits = [i for g in groups for i in g[2]]
    if segs.single:  # each event's state before it is its key's initial state
        final = [i * g[1] + r for g in groups for r, i in zip(g[0], g[2], strict=True)]
        return inits, final
    rows = [r for g in groups for r in g[0]]
    sizes = [1 if r.ndim == 1 else r.shape[0] for r in rows]
    decay = np.repeat([g[1] for g in groups for _ in g[0]], sizes)
    before, after = ew_scan(
        np.concatenate([r.reshape(k, -1) for r, k in zip(rows, sizes, strict=True)]),
        decay,
        segs,
        np.concatenate([i.reshape(k, -1) for i, k in zip(inits, sizes, strict=True)]),
    )
    at = np.cumsum([0, *sizes]).tolist()
    spans = list(pairwise(at))
    return [before[a:b].reshape(r.shape) for (a, b), r in zip(spans, rows, strict=True)], [
        after[a:b].reshape(i.shape) for (a, b), i in zip(spans, inits, strict=True)
    ]


def ew_scan_stacked(
    rows: np.ndarray, decay: float | np.ndarray, segs: Segments, init: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`ew_scan` of rows stacked as (r, k, n), with one decay or one per ``r``, from
    initial states (r, k, m): the state before each event (r, k, n) and the final (r, k, m)."""
    r, k, n = rows.shape
    if isinstance(decay, np.ndarray):
        decay = np.repeat(decay, k)
    before, final = ew_scan(rows.reshape(r * k, n), decay, segs, init.reshape(r * k, -1))
    return before.reshape(rows.shape), final.reshape(r, k, -1)


def _ew_walk(
    v: np.ndarray, decay: float | np.ndarray, segs: Segments, init: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`ew_scan` as a compiled loop over each key's events in turn (any layout): exact,
    since no value of one key enters another's sums, so the result does not depend on which
    keys share a batch."""
    from sluice.models.detectors import kernels  # numba, compiled on first use

    rows = v.reshape(-1, v.shape[-1])
    decays = np.broadcast_to(np.asarray(decay, dtype=np.float64), (rows.shape[0],))
    before, final = np.empty(rows.shape), np.empty((rows.shape[0], segs.m))
    order, bounds = segs.walk()
    kernels.segment_scan()(
        np.ascontiguousarray(rows, dtype=np.float64),
        np.ascontiguousarray(decays),
        order,
        bounds,
        np.ascontiguousarray(init.reshape(rows.shape[0], -1), dtype=np.float64),
        before,
        final,
    )
    return before.reshape(v.shape), final.reshape(init.shape)


def last_valid(
    x: np.ndarray, valid: np.ndarray, segs: Segments, init: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Most recent valid value of the same key before each event, and after each segment."""
    if segs.single:
        return np.array(init, dtype=x.dtype), np.where(valid, x, init)
    if not segs.blocks:
        return _last_valid_contiguous(x, valid, segs, init)
    before = np.empty_like(x)
    carry = np.array(init, dtype=x.dtype)
    for a, b in segs.blocks:
        cv = carry[..., : b - a]
        before[..., a:b] = cv
        np.copyto(cv, x[..., a:b], where=valid[..., a:b])
    tail = segs.tail
    if tail is not None:
        first = segs.tail_from
        before[..., first:], carry[..., : tail.m] = _last_valid_contiguous(
            x[..., first:], valid[..., first:], tail, carry[..., : tail.m]
        )
    return before, carry


def _last_valid_contiguous(
    x: np.ndarray, valid: np.ndarray, segs: Segments, init: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    idx = np.broadcast_to(np.arange(segs.n), x.shape)
    pos = np.maximum.accumulate(np.where(valid, idx, -1), axis=-1)
    seg_start = segs.start[segs.seg]
    inside = pos >= seg_start
    filled = np.where(
        inside, np.take_along_axis(x, np.maximum(pos, 0), axis=-1), init[..., segs.seg]
    )
    return segs.shift(filled, init), filled[..., segs.last]


def run_length(
    repeat: np.ndarray, segs: Segments, init: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Length of the run of consecutive ``repeat`` events ending at each event (carrying init)."""
    if segs.single:
        run = (init + 1.0) * repeat
        return run, run.copy()
    if not segs.blocks:
        return _run_length_contiguous(repeat, segs, init)
    run = np.empty(repeat.shape)
    carry = np.array(init, dtype=np.float64)
    for a, b in segs.blocks:
        cv = carry[..., : b - a]
        cv += 1.0
        cv *= repeat[..., a:b]
        run[..., a:b] = cv
    tail = segs.tail
    if tail is not None:
        first = segs.tail_from
        run[..., first:], carry[..., : tail.m] = _run_length_contiguous(
            repeat[..., first:], tail, carry[..., : tail.m]
        )
    return run, carry


def _run_length_contiguous(
    repeat: np.ndarray, segs: Segments, init: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    idx = np.broadcast_to(np.arange(segs.n), repeat.shape)
    last_break = np.maximum.accumulate(np.where(repeat, -1, idx), axis=-1)
    seg_start = segs.start[segs.seg]
    run = np.where(last_break >= seg_start, idx - last_break, init[..., segs.seg] + segs.offset + 1)
    run = np.where(repeat, run, 0)
    return run, run[..., segs.last]


def running_max(x: np.ndarray, segs: Segments, init: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-key maximum of the valid values before each event (NaN ignored), and after."""
    if segs.single:
        return np.array(init, dtype=np.float64), np.fmax(init, x)
    if not segs.blocks:
        return _running_max_contiguous(x, segs, init)
    before = np.empty_like(x)
    carry = np.array(init, dtype=np.float64)
    for a, b in segs.blocks:
        cv = carry[..., : b - a]
        before[..., a:b] = cv
        np.fmax(cv, x[..., a:b], out=cv)
    tail = segs.tail
    if tail is not None:
        first = segs.tail_from
        before[..., first:], carry[..., : tail.m] = _running_max_contiguous(
            x[..., first:], tail, carry[..., : tail.m]
        )
    return before, carry


def _running_max_contiguous(
    x: np.ndarray, segs: Segments, init: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`running_max` of a contiguous layout (few segments: one accumulate each)."""
    before = np.empty_like(x)
    end = np.array(init, dtype=np.float64)
    for s, (a, b) in enumerate(zip(segs.start.tolist(), (segs.last + 1).tolist(), strict=True)):
        acc = np.fmax.accumulate(np.concatenate([init[:, s : s + 1], x[:, a:b]], axis=1), axis=1)
        before[:, a:b] = acc[:, :-1]
        end[:, s] = acc[:, -1]
    return before, end


def decayed_max(
    v: np.ndarray, decay: float, segs: Segments, init: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-key ``M_t = max(v_t, decay * M_{t-1})`` for ``v >= 0``; before each event and final."""
    if segs.single:
        return np.array(init, dtype=np.float64), np.maximum(init * decay, v)
    if not segs.blocks:
        return _decayed_max_contiguous(v, decay, segs, init)
    before = np.empty_like(v)
    carry = np.array(init, dtype=np.float64)
    for a, b in segs.blocks:
        cv = carry[..., : b - a]
        before[..., a:b] = cv
        cv *= decay
        np.maximum(cv, v[..., a:b], out=cv)
    tail = segs.tail
    if tail is not None:
        first = segs.tail_from
        before[..., first:], carry[..., : tail.m] = _decayed_max_contiguous(
            v[..., first:], decay, tail, carry[..., : tail.m]
        )
    return before, carry


def _decayed_max_contiguous(
    v: np.ndarray, decay: float, segs: Segments, init: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """In log space: a cumulative maximum of ``log v_j - j log decay``, segments kept apart by
    a per-segment offset larger than any in-segment range."""
    ln_d = np.log(decay)
    k = segs.offset.astype(np.float64)
    logv = np.log(np.maximum(v, 1e-300)) - k * ln_d
    log_init = np.log(np.maximum(init, 1e-300))[..., segs.seg] + ln_d
    first = np.maximum(logv, log_init)
    span = float(np.max(np.abs(first))) * 2.0 + 1.0 if first.size else 1.0
    lifted = first + segs.seg * span
    m = np.maximum.accumulate(lifted, axis=-1) - segs.seg * span + k * ln_d
    after = np.exp(np.minimum(m, 700.0))
    after = np.where(after <= 1e-299, 0.0, after)
    return segs.shift(after, init), after[..., segs.last]


def latch(
    start: np.ndarray, keep: np.ndarray, segs: Segments, init: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-key ``on_t = start_t or (on_{t-1} and keep_t)`` (``init`` per segment); and final."""
    if segs.single:
        on = ((np.asarray(init) > 0) & keep) | start
        return on, on.astype(np.float64)
    if not segs.blocks:
        return _latch_contiguous(start, keep, segs, init)
    on = np.empty(start.shape, dtype=bool)
    carry = np.asarray(init) > 0
    for a, b in segs.blocks:
        cv = carry[..., : b - a]
        cv &= keep[..., a:b]
        cv |= start[..., a:b]
        on[..., a:b] = cv
    final = carry.astype(np.float64)
    tail = segs.tail
    if tail is not None:
        first = segs.tail_from
        on[..., first:], final[..., : tail.m] = _latch_contiguous(
            start[..., first:], keep[..., first:], tail, final[..., : tail.m]
        )
    return on, final


def _latch_contiguous(
    start: np.ndarray, keep: np.ndarray, segs: Segments, init: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    idx = np.broadcast_to(np.arange(segs.n), start.shape)
    last_start = np.maximum.accumulate(np.where(start, idx, -1), axis=-1)
    last_break = np.maximum.accumulate(np.where(keep | start, -1, idx), axis=-1)
    seg_start = segs.start[segs.seg]
    carried = (init[..., segs.seg] > 0) & (last_break < seg_start)
    on = ((last_start >= seg_start) & (last_start > last_break)) | carried
    return on, on[..., segs.last].astype(np.float64)
