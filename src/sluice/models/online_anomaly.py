"""``online_anomaly``: a streaming, per-key, multivariate anomaly detector vectorised over a batch.

Each key (device, account ...) keeps its own exponentially weighted state. A batch is sorted by
key and every detector runs as a segmented scan (see :mod:`sluice.models.detectors.scan`), so an
event is scored only from the events of its key that came before it - including earlier events
of the same batch - without a per-event Python loop. Several cheap detectors (level, trend,
spread, rate of change, stuck sensor, seasonality - see
:mod:`sluice.models.detectors.seasonal` - and pairwise structure) are combined into a
surprise, which goes through an anomaly-likelihood and a novelty stage (see
:mod:`sluice.models.detectors.combine`). Scores are in ``[0, 1)``: ``score = s / (s + 4)`` for a
surprise of ``s`` (``-log10`` probability), so 0.5 is about a one-in-10,000 event. The alert
threshold needs no labels: it is the ``1 - target_alert_rate`` quantile of recent scores,
never below ``min_score``. The published score is the larger of that alerting score and the
event's own surprise (``s / (s + 4)`` of the strongest statistic), so every event of an
incident ranks high. ``ScoreResult.onset`` is the variant NAB scores: after an alert, a key's
scores stay damped for a while unless something stronger happens (so one incident ranks
once, as NAB rewards), and an event is damped when no pattern of recent values new to its key
came with it (context novelty after NAB's CAD OSE detector, see
:mod:`sluice.models.detectors.context`); onsets of keys watched for many events are discounted
slowly (see :func:`sluice.models.detectors.combine.lifetime_discount`); alerts are decided
before that damping. An alert stays on for the key while its strongest statistic stays beyond
``PERSIST_SURPRISE`` (so a whole sustained incident is flagged); the statistics that average
recent events only count while the value itself is still off its level, and on the side of
the recent events (so the return to normal does not extend an alert, see ``KEEP_LEVEL``), and
an alert only starts on an event that would keep it on.
When most keys shift the same way at once (a global regime change, see
:mod:`sluice.models.detectors.regime`) the shifted features are not scored.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.special import ndtri

from sluice.core.allocator import reuse_freed_memory
from sluice.core.errors import ModelError, StateError
from sluice.models.detectors.combine import (
    N_BINS,
    POST_STATE,
    SCALE,
    PostParams,
    lifetime_discount,
    post_basis,
    post_process,
)
from sluice.models.detectors.combine import surprise as to_surprise
from sluice.models.detectors.context import (
    CONTEXT_STATE,
    FAMILIAR,
    SINCE_STATE,
    WORDS,
    ContextResult,
    context_scores,
)
from sluice.models.detectors.drift import DRIFT_STATE, DriftParams, drift_scores, rebase
from sluice.models.detectors.explain import explain
from sluice.models.detectors.keys import KeyTable, PackedRows, Spec, lazy_zeros
from sluice.models.detectors.layout import split
from sluice.models.detectors.regime import Shifts, regime_mask, shift_counts, signs
from sluice.models.detectors.scan import Segments, latch
from sluice.models.detectors.seasonal import (
    MIN_PERIOD,
    SEASON_STATE,
    History,
    SeasonResult,
    ring_mask,
    season_scores,
    seasonal_cap,
)
from sluice.models.detectors.structure import PAIR_STATE, pair_basis, structure_scores
from sluice.models.detectors.univariate import (
    DETECTORS,
    FEATURE_STATE,
    FeatureResult,
    Horizons,
    feature_basis,
    feature_scores,
    recenter,
)

HIST_BINS = 2000
STATE_VERSION = 7
# a batch is processed in chunks of whole keys of about this many values (events x features),
# so that intermediate arrays stay in the CPU cache
CHUNK_VALUES = 50_000
PERSIST_SURPRISE = 3.0  # -log10 p of the strongest statistic that keeps an incident alerted
DRIFT_START = 5.0  # |drift statistic| that starts an alert by itself (see detectors.drift)
DRIFT_PERSIST = 3.0  # ... and that keeps one on
# a feature's lingering statistics (trend, spread, rate, drift) keep an alert on only while
# its value itself is at least this many sigma off its level: a return to normal ends one
KEEP_LEVEL = 1.0


@dataclass
class OnlineAnomalyConfig:
    """Settings of :class:`OnlineAnomalyDetector`; every default works out of the box."""

    features: list[str]
    key: str | None = None
    warmup: int = 30
    horizon: int = 300
    target_alert_rate: float = 0.01
    max_keys: int = 100_000
    seed: int = 0
    short_horizon: int = 8
    novelty_horizon: int = 50
    quiet_horizon: int = 400  # events over which an alert's level damps later scores
    min_score: float = 0.4
    calibration_horizon: int = 100_000
    season_window: int = 720  # values kept per key and feature for seasonality (0 = off)


@dataclass
class ScoreResult:
    """Per-row outputs: score in [0, 1) (higher is more anomalous), alert flag and reason.

    ``onset`` is the score with each incident's repeats damped (the post-alert quiet period):
    only an incident's first events rank high, as NAB's scoring rewards.
    """

    score: np.ndarray
    anomaly: np.ndarray
    reason: np.ndarray
    onset: np.ndarray = field(default_factory=lambda: np.zeros(0))


@dataclass
class _Batch:
    """Intermediate results of one chunk of a batch (all events of some keys), key-grouped."""

    segs: Segments  # segs.order holds batch rows
    X: np.ndarray  # values (p, n)
    st: dict[str, np.ndarray]  # state before the chunk, per segment
    features: FeatureResult
    ready: np.ndarray
    season: SeasonResult
    history: History | None
    dev: np.ndarray
    held: np.ndarray
    basis: dict[str, np.ndarray] | None  # derived from the state (one event per key, scoring)
    structure: np.ndarray = field(default_factory=lambda: np.zeros(0))
    partner: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    final: np.ndarray = field(default_factory=lambda: np.zeros(0))
    ranked: np.ndarray = field(default_factory=lambda: np.zeros(0))
    alerting: np.ndarray = field(default_factory=lambda: np.zeros(0))
    alert: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    context: ContextResult | None = None
    state: dict[str, np.ndarray] = field(default_factory=dict)


class OnlineAnomalyDetector:
    """Streaming per-key multivariate anomaly detector (see the module docstring)."""

    def __init__(self, config: OnlineAnomalyConfig) -> None:
        if not config.features:
            raise ModelError("online_anomaly needs at least one feature")
        if not 0.0 < config.target_alert_rate < 1.0:
            raise ModelError("target_alert_rate must be between 0 and 1")
        if config.max_keys < 1 or config.horizon < 2 or config.warmup < 0:
            raise ModelError("max_keys must be >= 1, horizon >= 2 and warmup >= 0")
        if config.season_window and config.season_window < 4 * MIN_PERIOD:
            raise ModelError(f"season_window must be 0 (off) or >= {4 * MIN_PERIOD}")
        reuse_freed_memory()  # batches allocate many large temporaries
        self.config = config
        self.p = len(config.features)
        self.hz = Horizons.from_events(config.horizon, config.short_horizon)
        self.post = PostParams(
            long_decay=1.0 - 1.0 / (4 * config.horizon),
            short_decay=self.hz.short,
            max_decay=1.0 - 1.0 / max(config.novelty_horizon, 2),
            quiet_decay=1.0 - 1.0 / max(config.quiet_horizon, 2),
        )
        self.drift = DriftParams()
        # the statistic whose surprise (see to_surprise) is PERSIST_SURPRISE
        looks = (len(DETECTORS) + 1) * self.p
        self.persist_z = float(-ndtri(10.0**-PERSIST_SURPRISE / (2.0 * looks)))
        self.n_pairs = self.p * (self.p - 1) // 2
        self.window = config.season_window
        self.refresh = max(4 * MIN_PERIOD, self.window // 2)
        self.chunk = max(CHUNK_VALUES // self.p, 1024)
        # zeros, not NaN: only values written for a key are ever read (see History.at)
        bulk: Spec = {"ctx": ((self.p, WORDS), 0.0)}
        if self.window:
            bulk["buf"] = ((self.window, self.p), 0.0)
        self.keys = KeyTable(config.max_keys, self._fresh_state(), bulk)
        self.hist = np.zeros(HIST_BINS)
        self.events = 0
        # derived from the whole state, kept between calls until it changes (see _changed)
        self._threshold: float | None = None
        self._summary: tuple[np.ndarray, float] | None = None
        self._derived: PackedRows | None = None

    def _fresh_state(self) -> dict[str, tuple[tuple[int, ...], float]]:
        spec: dict[str, tuple[tuple[int, ...], float]] = {
            name: ((self.p,), np.nan if name == "prev" else 0.0) for name in FEATURE_STATE
        }
        spec.update({name: ((), 0.0) for name in POST_STATE})
        spec["hist"] = ((N_BINS,), 0.0)
        spec["open"] = ((), 0.0)
        spec.update({"dev": ((self.p,), 0.0), "reg": ((self.p,), 0.0)})
        spec.update({name: ((self.n_pairs,), 0.0) for name in PAIR_STATE})
        spec.update({name: ((self.p,), 0.0) for name in SEASON_STATE})
        spec.update({name: ((self.p,), 0.0) for name in DRIFT_STATE})
        spec.update({name: ((self.p,), 0.0) for name in CONTEXT_STATE})
        spec[SINCE_STATE] = ((), 0.0)
        spec["count"] = ((), 0.0)
        return spec

    @property
    def evicted_keys(self) -> int:
        """How many keys were dropped (least recently seen first) to stay within max_keys."""
        return self.keys.evicted

    @property
    def n_keys(self) -> int:
        """How many keys currently hold state."""
        return len(self.keys)

    def threshold(self) -> float:
        """The current label-free alert threshold on the score."""
        if self._threshold is None:
            self._threshold = self._quantile_threshold()
        return self._threshold

    def _quantile_threshold(self) -> float:
        total = self.hist.sum()
        if total * self.config.target_alert_rate < 10.0:
            return max(self.config.min_score, 0.45)
        cum = np.cumsum(self.hist[::-1])
        above = int(np.searchsorted(cum, self.config.target_alert_rate * total))
        q = 1.0 - above / HIST_BINS
        return max(self.config.min_score, q)

    def _key_summary(self) -> tuple[np.ndarray, float]:
        """Keys shifted up and down per feature (2, p), and how many keys have history."""
        if self._summary is None:
            used = self.keys.used
            known = float(np.count_nonzero(used & (self.keys.arrays["count"] > 0)))
            self._summary = (shift_counts(self.keys.arrays["dev"], used), known)
        return self._summary

    def _changed(self) -> None:
        """Forget what was derived from the state (call whenever the state changes)."""
        self._threshold = self._summary = self._derived = None

    def prepare(self) -> None:
        """Derive now what scoring without learning needs (threshold, key summary, per-key
        basis), so that the first request after a restore does not wait for it."""
        self.threshold()
        self._key_summary()
        self._basis(np.zeros(1, dtype=np.int64))

    def _basis(self, slots: np.ndarray) -> dict[str, np.ndarray]:
        """What the detectors derive from the state before an event, for keys ``slots``
        scored without learning (one event each); derived for all keys at once and kept
        until the state changes."""
        cap = self.keys.cap
        if self._derived is None:
            st = self.keys.gather(np.arange(cap + 1))  # slot ``cap`` is virtual: a fresh key
            parts = {**feature_basis(st, self.hz), **post_basis(st, self.post)}
            if self.p > 1:
                parts.update(pair_basis(st))
            self._derived = PackedRows(parts)
        return self._derived.gather(np.minimum(slots, cap))

    def score_learn(self, keys: np.ndarray | None, X: np.ndarray) -> ScoreResult:
        """Score each row from the state before it, then learn from it (in row order)."""
        X = self._check(keys, X)
        n = X.shape[0]
        if n == 0:
            return _empty()
        chunk = self.config.max_keys
        if keys is not None and n > chunk and self.keys.distinct(keys) > chunk:
            results = [
                self.score_learn(keys[i : i + chunk], X[i : i + chunk]) for i in range(0, n, chunk)
            ]
            return ScoreResult(
                *(
                    np.concatenate([getattr(r, f) for r in results])
                    for f in ("score", "anomaly", "reason", "onset")
                )
            )
        threshold = self.threshold()
        slots = self.keys.assign(keys, n)
        self._changed()  # new keys may have evicted others
        parts = self._run(slots, X, threshold, learn=True)
        for part in parts:
            self.keys.scatter(part.segs.slot, part.state)
            if part.history is not None:
                part.history.write()
            if part.context is not None:
                part.context.update.write()
        result = self._result(parts, X)
        self._calibrate(np.concatenate([part.alerting for part in parts]))
        self._changed()
        return result

    def score(self, keys: np.ndarray | None, X: np.ndarray) -> ScoreResult:
        """Score rows as :meth:`score_learn` would, without changing any state."""
        X = self._check(keys, X)
        if X.shape[0] == 0:
            return _empty()
        slots = self.keys.lookup(keys, X.shape[0])
        threshold = self.threshold()
        return self._result(self._run(slots, X, threshold, learn=False), X)

    def _check(self, keys: np.ndarray | None, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim == 1 and self.p == 1:
            X = X[:, None]
        if X.ndim != 2 or X.shape[1] != self.p:
            raise ModelError(
                f"expected X of shape (n, {self.p}) for features "
                f"{self.config.features}, got {X.shape}"
            )
        if keys is not None and len(keys) != X.shape[0]:
            raise ModelError(f"{len(keys)} keys for {X.shape[0]} rows")
        return X

    def _run(
        self, slots: np.ndarray, X: np.ndarray, threshold: float, *, learn: bool
    ) -> list[_Batch]:
        parts = [self._observe(segs, X, learn) for segs in split(slots, self.chunk)]
        active, shifts = self._shifts(parts, X.shape[0])
        for part in parts:
            self._decide(part, active, shifts, threshold, learn)
        return parts

    def _observe(self, segs: Segments, X: np.ndarray, learn: bool) -> _Batch:
        """Per-feature statistics and seasonality of one chunk (no cross-key information)."""
        Xs = X[segs.order].T.copy()
        st = self.keys.gather(segs.slot)
        _init_reference(st, Xs, segs)
        # each event's state before it is its key's: what derives from it is kept
        basis = self._basis(segs.slot) if segs.single and not learn else None
        fr = feature_scores(Xs, segs, st, self.hz, basis)
        ready = fr.valid & (fr.sd > 0)
        hist, season = self._season(Xs, segs, st)
        dev, held = signs(fr.z[0], fr.short_mean, ready, segs, st["dev"])
        return _Batch(segs, Xs, st, fr, ready, season, hist, dev, held, basis)

    def _shifts(self, parts: list[_Batch], n: int) -> tuple[np.ndarray, Shifts]:
        """Active keys at each batch row, and the batch's shift-sign changes (for regimes)."""
        counts, known = self._key_summary()
        arrival = np.zeros(n)
        shifts = Shifts(n, counts)
        for part in parts:
            arrival[part.segs.order[part.segs.start]] = part.st["count"] <= 0
            shifts.add(part.dev, part.held, part.segs.order)
        shifts.close()
        return known + np.cumsum(arrival), shifts

    def _decide(
        self, part: _Batch, active: np.ndarray, shifts: Shifts, threshold: float, learn: bool
    ) -> None:
        """Regimes, structure, the combined score and the alert of one chunk (and its final
        state when ``learn``)."""
        segs, st, fr, ready = part.segs, part.st, part.features, part.ready
        dz, clear, drift = drift_scores(
            part.X,
            st["ref"],
            fr.sd,
            fr.short_mean,
            ready,
            segs,
            {k: st[k] for k in DRIFT_STATE},
            self.drift,
            (fr.valid, fr.centred),
        )
        size = np.abs(dz)
        reg, reg_final = regime_mask(
            fr.z[0],
            fr.short_mean,
            ready,
            segs,
            st["reg"],
            shifts,
            active[segs.order],
            size >= DRIFT_PERSIST,
        )
        size[reg] = 0.0
        if self.p > 1:
            e = np.minimum(np.maximum(fr.z[0], -8.0), 8.0)
            sz, partner, pair = structure_scores(
                e,
                ready & (e != 0) & ~reg,
                segs,
                self.hz.long,
                {k: st[k] for k in PAIR_STATE},
                part.basis,
            )
        else:
            sz, partner = np.zeros_like(part.X), np.zeros(part.X.shape, dtype=np.int64)
            pair = {k: st[k] for k in PAIR_STATE}
        best, held, back = _peak(fr.z, fr.short_mean, part.season, sz, reg)
        # the seasonal statistic stands in for the level one (it caps it), so not one more look
        raw = to_surprise(best, tests=(fr.z.shape[0] + 1) * self.p)
        age = st["count"][segs.seg] + segs.offset
        warm = age >= self.config.warmup
        final, alerting, post = post_process(
            raw, warm, segs, self.post, {k: st[k] for k in POST_STATE}, threshold, part.basis
        )
        slow = size.max(axis=0)
        size[back | ~clear] = 0.0
        drifting = size.max(axis=0)
        # an incident stays alerted while its deviation persists (the score itself is damped),
        # and only one that would stay alerted starts
        keep = (held >= self.persist_z) | (drifting >= DRIFT_PERSIST)
        alert, post["open"] = latch(
            ((alerting >= threshold) & keep) | (drifting >= DRIFT_START), keep, segs, st["open"]
        )
        ctx = context_scores(
            part.X,
            segs,
            {k: st[k] for k in (*CONTEXT_STATE, SINCE_STATE)},
            st["count"] <= 0,
            self.keys.arrays["ctx"],
            stale=self.keys.evicted > 0,
        )
        final = lifetime_discount(np.where(ctx.familiar, final * FAMILIAR, final), age)
        part.structure, part.partner, part.final, part.context = sz, partner, final, ctx
        part.alerting, part.alert = alerting, alert
        s = np.maximum(raw, to_surprise(slow, tests=self.p))
        part.ranked = np.maximum(alerting, s / (s + SCALE))
        if learn:
            part.state = self._final_state(part, post, reg_final, pair, drift)

    def _final_state(
        self,
        part: _Batch,
        post: dict[str, np.ndarray],
        reg_final: np.ndarray,
        pair: dict[str, np.ndarray],
        drift: dict[str, np.ndarray],
    ) -> dict[str, np.ndarray]:
        """Each key's state after the chunk, (m, ...) per name as the key table stores it."""
        segs, st = part.segs, part.st
        post["hist"] = post["hist"].T
        state = {k: v.T for k, v in part.features.state.items()}
        state.update(post)
        state.update({"dev": part.dev[:, segs.last].T, "reg": reg_final.T})
        state.update({k: v.T for k, v in pair.items()})
        state.update({k: v.T for k, v in part.season.state.items()})
        if part.context is not None:
            state.update({k: v.T for k, v in part.context.state.items()})
        state["count"] = st["count"] + segs.lengths
        ref = state["ref"]
        recenter(state)
        state.update({k: v.T for k, v in drift.items()})
        rebase(state, state["ref"] - ref)
        return state

    def _season(
        self, Xs: np.ndarray, segs: Segments, st: dict[str, np.ndarray]
    ) -> tuple[History | None, SeasonResult]:
        init = {k: st[k] for k in SEASON_STATE}
        if not self.window:
            zero = np.zeros_like(Xs)
            return None, SeasonResult(zero, zero, np.full_like(Xs, np.nan), init)
        hist = History(
            Xs.astype(np.float32),
            segs,
            st["count"].astype(np.int64),
            self.keys.arrays["buf"],
            segs.slot < self.keys.cap,
        )
        return hist, season_scores(Xs, hist, init, self.refresh)

    def _result(self, parts: list[_Batch], X: np.ndarray) -> ScoreResult:
        n = X.shape[0]
        score, anomaly, onset = np.empty(n), np.empty(n, dtype=bool), np.empty(n)
        reason = np.full(n, "", dtype=object)
        for part in parts:
            rows = part.segs.order
            score[rows] = part.ranked
            onset[rows] = part.final
            anomaly[rows] = part.alert
            explain(part, self.config, reason)
        return ScoreResult(score, anomaly, reason, onset)

    def _calibrate(self, score: np.ndarray) -> None:
        decay = np.exp(-score.shape[0] / self.config.calibration_horizon)
        bins = np.minimum((score * HIST_BINS).astype(np.int64), HIST_BINS - 1)
        self.hist = self.hist * decay + np.bincount(bins, minlength=HIST_BINS)
        self.events += int(score.shape[0])

    def get_state(self) -> bytes:
        """Serialise all learned state (exactly restorable with :meth:`set_state`)."""
        arrays, keys, meta = self.keys.export()
        if self.window:
            # only the values each key holds (a young key's ring is mostly empty)
            mask = ring_mask(self.keys.arrays["count"], self.keys.used, self.window)
            arrays["buf"] = arrays["buf"][mask]
        # only the words with a bit set, of keys in use (most of a bitset stays empty)
        bits = np.where(self.keys.used[:, None, None], arrays["ctx"], 0.0).ravel()
        at = np.flatnonzero(bits)
        arrays["ctx_at"] = at.astype(np.uint32) if bits.size < 2**32 else at
        arrays["ctx"] = bits[arrays["ctx_at"]]
        header = {
            "version": STATE_VERSION,
            "config": asdict(self.config),
            "keys": keys,
            "events": self.events,
            **meta,
        }
        buf = io.BytesIO()
        payload: dict[str, np.ndarray] = {f"s_{k}": v for k, v in arrays.items()}
        payload["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
        payload["hist"] = self.hist
        np.savez(buf, **payload)  # type: ignore[arg-type]
        return buf.getvalue()

    def set_state(self, blob: bytes) -> None:
        """Restore state produced by :meth:`get_state` of a detector with the same features."""
        try:
            with np.load(io.BytesIO(blob), allow_pickle=False) as data:
                header = json.loads(bytes(data["header"]).decode())
                arrays = {k[2:]: data[k] for k in data.files if k.startswith("s_")}
                hist = data["hist"]
        except (OSError, ValueError, KeyError) as exc:
            raise StateError(f"online_anomaly state is unreadable: {exc}") from exc
        if header.get("version") != STATE_VERSION:
            raise StateError(
                f"online_anomaly state version {header.get('version')} is not {STATE_VERSION}"
            )
        if header["config"]["features"] != self.config.features:
            raise StateError(
                f"state was saved for features {header['config']['features']}, "
                f"not {self.config.features}"
            )
        saved_window = header["config"].get("season_window", 0)
        if saved_window != self.config.season_window:
            raise StateError(
                f"state was saved with season_window={saved_window}, "
                f"not {self.config.season_window}"
            )
        if self.window:
            mask = ring_mask(arrays["count"], arrays["_used"], self.window)
            ring = lazy_zeros((*mask.shape, self.p))
            try:
                ring[mask] = arrays["buf"]
            except ValueError as exc:
                raise StateError(f"online_anomaly state has a damaged ring buffer: {exc}") from exc
            arrays["buf"] = ring
        bits = np.zeros(len(header["keys"]) * self.p * WORDS, dtype=np.float32)
        try:
            bits[arrays.pop("ctx_at")] = arrays["ctx"]
        except (KeyError, IndexError, ValueError) as exc:
            raise StateError(f"online_anomaly state has damaged context bits: {exc}") from exc
        arrays["ctx"] = bits.reshape(-1, self.p, WORDS)
        self.keys.restore(arrays, header["keys"], header)
        self.hist = np.array(hist, dtype=np.float64)
        self.events = int(header["events"])
        self._changed()


def _init_reference(st: dict[str, np.ndarray], Xs: np.ndarray, segs: Segments) -> None:
    """Give keys without history a reference level equal to their first finite value."""
    fresh = st["w"] <= 0.0  # (p, m)
    if not fresh.any():
        return
    n = Xs.shape[1]
    first = segs.first(np.isfinite(Xs))
    value = np.take_along_axis(Xs, np.minimum(first, n - 1), axis=1)
    value = np.where(first < n, value, 0.0)
    st["ref"] = np.where(fresh, value, st["ref"])


def _peak(
    z: np.ndarray, short_mean: np.ndarray, season: SeasonResult, sz: np.ndarray, reg: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Largest statistic of each event over detectors and features (seasonally capped), the
    largest that keeps an alert on (see :data:`KEEP_LEVEL`), and where a feature is back at
    its level (p, n).

    Features in a regime change count as zero. Trend, spread and rate echo the last events,
    so right after an incident they stay large while the value is back at its level.
    """
    size = np.abs(z)
    cap = seasonal_cap(season)
    side = np.maximum(np.abs(season.z), np.abs(sz))
    peak = size.max(axis=0)
    quiet = np.maximum(size[0], size[4])
    for part in (peak, quiet):
        np.minimum(part, cap, out=part)
        np.maximum(part, side, out=part)
        part[reg] = 0.0
    # back at its level, or on the other side of it from the recent events (a return)
    back = (size[0] < KEEP_LEVEL) | ((z[0] * short_mean < 0) & (np.abs(short_mean) >= KEEP_LEVEL))
    return peak.max(axis=0), np.where(back, quiet, peak).max(axis=0), back


def _empty() -> ScoreResult:
    return ScoreResult(np.zeros(0), np.zeros(0, dtype=bool), np.zeros(0, dtype=object), np.zeros(0))


__all__ = ["DETECTORS", "OnlineAnomalyConfig", "OnlineAnomalyDetector", "ScoreResult"]
