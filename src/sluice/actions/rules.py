"""Rule options and the vectorised per-rule stages: ``for``, dedupe, cooldown, rate limit.

Every stage works on numpy arrays of the rows whose condition holds; Python loops run
per distinct key, never per event. Times are microseconds (event time when the pipeline
has one, else the evaluation clock); rate limits always use the evaluation clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, field_validator

from sluice.core.arrays import from_numpy, objects, scalar
from sluice.core.errors import ConfigError
from sluice.core.types import duration_us

RULE_KEYS = frozenset(
    {
        "group_by",
        "for",
        "dedupe",
        "cooldown",
        "rate_limit",
        "severity",
        "payload",
        "approval",
        "approval_timeout",
        "retry",
        "key",
    }
)
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*(ms|s|m|h|d)\s*$")


def _duration(value: Any) -> Any:
    if value is not None:
        try:
            duration_us(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
    return value


def _columns(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class DedupeSpec(_Strict):
    """One action per key per window."""

    key: str | list[str]
    window: str | float

    _w = field_validator("window")(classmethod(lambda cls, v: _duration(v)))


class RateLimitSpec(_Strict):
    """At most ``rate`` actions (``100/m``, ``10/5s``) per action, or per ``key``."""

    rate: str
    key: str | list[str] | None = None

    @field_validator("rate")
    @classmethod
    def _rate(cls, value: str) -> str:
        if not _RATE.match(value):
            raise ValueError(f"invalid rate {value!r}; write it like 100/m or 10/5s")
        return value

    def per_second(self) -> tuple[float, float]:
        """(capacity, tokens per second)."""
        match = _RATE.match(self.rate)
        assert match is not None
        count, amount, unit = int(match.group(1)), match.group(2) or "1", match.group(3)
        seconds = duration_us(f"{amount}{unit}") / 1e6
        return float(count), count / seconds


class RetrySpec(_Strict):
    """Delivery retries: exponential backoff with jitter, dead after ``max_attempts``."""

    max_attempts: int = Field(default=8, ge=1)
    backoff: str | float = "1s"
    max_backoff: str | float = "5m"

    _d = field_validator("backoff", "max_backoff")(classmethod(lambda cls, v: _duration(v)))


class RuleOptions(_Strict):
    """The keys every action shares (the rest belong to the action type)."""

    group_by: str | list[str] | None = None
    for_: int | str | None = Field(default=None, alias="for")
    dedupe: DedupeSpec | None = None
    cooldown: str | float | None = None
    rate_limit: str | RateLimitSpec | None = None
    severity: str = "info"
    payload: Any = None
    approval: Literal["required", "none"] = "none"
    approval_timeout: str | float = "1h"
    retry: RetrySpec = Field(default_factory=RetrySpec)
    key: str | list[str] | None = None

    _d = field_validator("cooldown", "approval_timeout")(classmethod(lambda cls, v: _duration(v)))

    @field_validator("for_")
    @classmethod
    def _for(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, int) and value < 1:
            raise ValueError("'for' must be a positive number of events or a duration")
        return _duration(value) if isinstance(value, str) else value

    @field_validator("rate_limit")
    @classmethod
    def _rate(cls, value: str | RateLimitSpec | None) -> RateLimitSpec | None:
        return RateLimitSpec(rate=value) if isinstance(value, str) else value

    def ordering_columns(self) -> list[str]:
        """Columns of the delivery ordering key (explicit ``key``, else group or dedupe key)."""
        return (
            _columns(self.key)
            or _columns(self.group_by)
            or _columns(self.dedupe.key if self.dedupe else None)
        )


def key_strings(table: pa.Table, columns: list[str], rows: np.ndarray) -> np.ndarray:
    """The key of each row in ``rows`` as a string (columns joined by ``|``); '' when none."""
    if not columns:
        return np.full(len(rows), "", dtype=object)
    taken = table.select(columns).take(from_numpy(np.asarray(rows, np.int64)))
    empty = scalar("", pa.string())
    parts = [pc.fill_null(pc.cast(taken.column(c), pa.string()), empty) for c in columns]
    if len(parts) > 1:
        parts = [pc.binary_join_element_wise(*parts, scalar("|", pa.string()))]
    return objects(parts[0])


def _group_codes(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(unique keys, code per row, stable order of rows sorted by code)."""
    uniques, codes = np.unique(keys.astype(str), return_inverse=True)
    return uniques.astype(object), codes, np.argsort(codes, kind="stable")


@dataclass
class WindowGate:
    """At most one pass per key per ``window`` microseconds (dedupe and cooldown)."""

    window: int
    last: dict[str, int] = field(default_factory=dict)

    def check(self, keys: np.ndarray, times: np.ndarray) -> np.ndarray:
        """Mask of rows that may pass (read-only; ``commit`` records what was sent)."""
        n = len(keys)
        passed = np.zeros(n, dtype=bool)
        if n == 0:
            return passed
        uniques, codes, order = _group_codes(keys)
        starts = np.flatnonzero(np.r_[True, codes[order][1:] != codes[order][:-1]])
        first_rows = order[starts]
        sorted_times = times[order]
        t_min = np.minimum.reduceat(sorted_times, starts)
        t_max = np.maximum.reduceat(sorted_times, starts)
        none = np.iinfo(np.int64).min
        last = np.array([self.last.get(k, none) for k in uniques], dtype=np.int64)
        fresh = last == none
        first_ok = fresh | (times[first_rows] - np.where(fresh, 0, last) >= self.window)
        simple = (t_max - t_min < self.window) & (
            first_ok | fresh | (t_max - np.where(fresh, 0, last) < self.window)
        )
        passed[first_rows[simple & first_ok]] = True
        bounds = np.r_[starts, len(order)]
        for g in np.flatnonzero(~simple):
            anchor = None if fresh[g] else int(last[g])
            for row in order[bounds[g] : bounds[g + 1]]:
                if anchor is None or times[row] - anchor >= self.window:
                    passed[row] = True
                    anchor = int(times[row])
        return passed

    def commit(self, keys: np.ndarray, times: np.ndarray, now: int) -> None:
        """Remember the latest sent time per key and forget keys older than the window."""
        if len(keys):
            order = np.argsort(times, kind="stable")
            self.last.update(zip(keys[order].tolist(), times[order].tolist(), strict=True))
        self.last = {k: t for k, t in self.last.items() if now - t < self.window}


@dataclass
class TokenBucket:
    """Rate limit per key: ``capacity`` tokens refilled at ``rate`` per second."""

    capacity: float
    rate: float
    buckets: dict[str, list[float]] = field(default_factory=dict)  # key -> [tokens, at_us]

    def _tokens(self, key: str, now: int) -> float:
        tokens, at = self.buckets.get(key, [self.capacity, float(now)])
        return min(self.capacity, tokens + (now - at) / 1e6 * self.rate)

    def check(self, keys: np.ndarray, now: int) -> np.ndarray:
        """Mask of rows allowed (the first ``floor(tokens)`` rows of each key)."""
        if len(keys) == 0:
            return np.zeros(0, dtype=bool)
        uniques, codes, order = _group_codes(keys)
        starts = np.flatnonzero(np.r_[True, codes[order][1:] != codes[order][:-1]])
        allowed = np.array([int(self._tokens(k, now)) for k in uniques], dtype=np.int64)
        rank_sorted = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = rank_sorted
        return bool_array(rank < allowed[codes])

    def commit(self, keys: np.ndarray, now: int) -> None:
        """Take one token per sent row; drop full buckets."""
        used: dict[str, int] = {}
        for key in keys.tolist():
            used[key] = used.get(key, 0) + 1
        for key in set(self.buckets) | set(used):
            tokens = self._tokens(key, now) - used.get(key, 0)
            if tokens >= self.capacity:
                self.buckets.pop(key, None)
            else:
                self.buckets[key] = [tokens, float(now)]


@dataclass
class GroupIndex:
    """Rows grouped by key: distinct keys, code per row, and a stable order by code."""

    uniques: np.ndarray
    codes: np.ndarray
    order: np.ndarray
    sorted_codes: np.ndarray
    boundaries: np.ndarray  # True where a new group starts in sorted order
    last_positions: np.ndarray  # sorted position of each group's last row
    rank: np.ndarray  # sorted position of each row (the inverse of ``order``)

    @classmethod
    def build(cls, uniques: np.ndarray, codes: np.ndarray) -> GroupIndex:
        """Sort once (radix sort for small integer codes)."""
        small = codes.astype(np.uint16) if len(uniques) < 65_536 else codes
        order = np.argsort(small, kind="stable")
        sorted_codes = codes[order]
        boundaries = (
            np.r_[True, sorted_codes[1:] != sorted_codes[:-1]]
            if len(codes)
            else np.zeros(0, dtype=bool)
        )
        last = (
            np.flatnonzero(np.r_[boundaries[1:], True])
            if len(codes)
            else np.zeros(0, dtype=np.int64)
        )
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        return cls(uniques, codes, order, sorted_codes, boundaries, last, rank)


def bool_array(values: Any) -> np.ndarray:
    """``values`` as a numpy bool array."""
    return np.asarray(values, dtype=bool)


@dataclass
class Streaks:
    """``for``: the condition must hold for N consecutive events or a duration, per group."""

    events: int | None
    duration: int | None
    open: dict[str, list[int]] = field(default_factory=dict)  # key -> [count, since_us]

    def apply(self, cond: np.ndarray, groups: GroupIndex, times: np.ndarray) -> np.ndarray:
        """Mask of rows where the condition has held long enough, per group."""
        out = np.zeros(len(cond), dtype=bool)
        if len(cond) == 0:
            return out
        order = groups.order
        # sorted positions of the rows that hold (few, usually): a streak is a run of
        # consecutive positions within one group
        true_pos = np.sort(groups.rank[np.flatnonzero(cond)])
        k = len(true_pos)
        starts = np.ones(k, dtype=bool)
        starts[1:] = (np.diff(true_pos) != 1) | groups.boundaries[true_pos[1:]]
        run_start = np.maximum.accumulate(np.where(starts, np.arange(k), 0))
        first = true_pos[run_start]
        count = np.arange(k) - run_start + 1
        since = times[order[first]]
        self._carry(groups, true_pos, first, count, since)
        if self.events is not None:
            holds = count >= self.events
        else:
            holds = times[order[true_pos]] - since >= (self.duration or 0)
        self._remember(groups, cond, true_pos, count, since)
        out[order[true_pos[holds]]] = True
        return out

    def _carry(
        self,
        groups: GroupIndex,
        true_pos: np.ndarray,
        first: np.ndarray,
        count: np.ndarray,
        since: np.ndarray,
    ) -> None:
        """Extend streaks that start at a group's first row with the previous batch's."""
        if not self.open:
            return
        at_start = np.flatnonzero(groups.boundaries[first])
        codes = groups.sorted_codes[true_pos[at_start]]
        for code in np.unique(codes):
            state = self.open.get(groups.uniques[code])
            if state is not None:
                rows = at_start[codes == code]
                count[rows] += state[0]
                since[rows] = state[1]

    def _remember(
        self,
        groups: GroupIndex,
        cond: np.ndarray,
        true_pos: np.ndarray,
        count: np.ndarray,
        since: np.ndarray,
    ) -> None:
        """Keep the open streak of every group whose last row holds; close the others."""
        last = groups.last_positions
        ends_true = cond[groups.order[last]]
        for code in groups.sorted_codes[last[~ends_true]]:
            self.open.pop(groups.uniques[code], None)
        tail = last[ends_true]
        index = np.searchsorted(true_pos, tail)
        for p, i in zip(tail.tolist(), index.tolist(), strict=True):
            key = groups.uniques[groups.sorted_codes[p]]
            self.open[key] = [int(count[i]), int(since[i])]


@dataclass
class RuleState:
    """All checkpointed state of one rule."""

    streaks: Streaks | None
    dedupe: WindowGate | None
    cooldown: WindowGate | None
    rate: TokenBucket | None

    @classmethod
    def build(cls, options: RuleOptions) -> RuleState:
        """Empty state for ``options``."""
        streaks = None
        if options.for_ is not None:
            events = options.for_ if isinstance(options.for_, int) else None
            dur = duration_us(options.for_) if isinstance(options.for_, str) else None
            streaks = Streaks(events, dur)
        rate = None
        if isinstance(options.rate_limit, RateLimitSpec):
            rate = TokenBucket(*options.rate_limit.per_second())
        return cls(
            streaks=streaks,
            dedupe=WindowGate(duration_us(options.dedupe.window)) if options.dedupe else None,
            cooldown=WindowGate(duration_us(options.cooldown)) if options.cooldown else None,
            rate=rate,
        )

    def dump(self) -> dict[str, Any]:
        """JSON-able state."""
        return {
            "for": self.streaks.open if self.streaks else None,
            "dedupe": self.dedupe.last if self.dedupe else None,
            "cooldown": self.cooldown.last if self.cooldown else None,
            "rate": self.rate.buckets if self.rate else None,
        }

    def load(self, data: dict[str, Any]) -> None:
        """Restore state written by ``dump``."""
        if self.streaks and data.get("for"):
            self.streaks.open = {k: list(v) for k, v in data["for"].items()}
        if self.dedupe and data.get("dedupe"):
            self.dedupe.last = dict(data["dedupe"])
        if self.cooldown and data.get("cooldown"):
            self.cooldown.last = dict(data["cooldown"])
        if self.rate and data.get("rate"):
            self.rate.buckets = {k: list(v) for k, v in data["rate"].items()}
