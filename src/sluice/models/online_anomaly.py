"""``online_anomaly``: a streaming, per-key, multivariate anomaly detector vectorised over a batch.

Each key (device, account ...) keeps its own exponentially weighted state. A batch is sorted by
key and every detector runs as a segmented scan (see :mod:`sluice.models.detectors.scan`), so an
event is scored only from the events of its key that came before it - including earlier events
of the same batch - without a per-event Python loop.

From one event to its outputs:

1. *Components* (see :mod:`sluice.models.detectors.evidence`): level, trend, spread, rate of
   change, stuck values (:mod:`~sluice.models.detectors.univariate`), seasonality
   (:mod:`~sluice.models.detectors.seasonal`), cross-feature structure
   (:mod:`~sluice.models.detectors.structure`) and slow drift
   (:mod:`~sluice.models.detectors.drift`), each the largest statistic over the features.
2. Each component is *calibrated* on the key's own history into a tail probability
   (:mod:`sluice.models.detectors.calibrate`); with the probability of a novel context
   (:mod:`~sluice.models.detectors.context`) they are combined by the Cauchy combination test.
3. The combination is calibrated once more on the key's history: ``p``. The published score is
   ``1 - p``, comparable across keys and features; ``anomaly`` is true exactly when
   ``score >= 1 - target_alert_rate`` and the key has seen ``warmup + calibration_events``
   events (a younger key never alerts, and its reason says so). On anomaly-free data of any
   shape about ``target_alert_rate`` of the events alert.
4. ``onset`` is positive on an event that starts an incident, else 0: where its surprise beats
   every recent one of its key (decayed over ``quiet_horizon`` events), and on the first alert,
   or the first anomalous event (``p`` at most calibration's exclusion level), after a quiet
   spell (see :func:`sluice.models.detectors.evidence.onsets`). Its value ranks
   incidents: the score, with the surprise of an event whose key showed no new pattern lately
   discounted (see :func:`~sluice.models.detectors.evidence.onset_surprise`). An action with
   ``when: "m_anomaly AND m_onset > 0"`` fires once per incident.

Every update happens at key-local event counts, so outputs do not depend on where micro-batch
boundaries fall, nor on a crash and replay. When most keys shift the same way at once (a
global regime change, see :mod:`sluice.models.detectors.regime`) the shifted features are not
scored while the keys adapt.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from sluice.core.allocator import reuse_freed_memory
from sluice.core.errors import ModelError, StateError
from sluice.models.detectors.calibrate import (
    EPISODE_STATE,
    EXCLUDE,
    N_BINS,
    CalibrationParams,
    calibrate,
    fresh_episodes,
    unlearned_state,
)
from sluice.models.detectors.context import (
    CONTEXT_STATE,
    LENGTH,
    SINCE_STATE,
    WORDS,
    ContextResult,
    context_scores,
)
from sluice.models.detectors.drift import DRIFT_STATE, DriftParams, drift_scores, rebase
from sluice.models.detectors.evidence import (
    COMPONENTS,
    NOVELTY_HORIZON,
    NOVELTY_STATE,
    ONSET_STATE,
    back_at_level,
    component_stats,
    fresh_novelty,
    fresh_onsets,
    novelty_probability,
    onset_score,
    onset_surprise,
    onsets,
)
from sluice.models.detectors.explain import explain
from sluice.models.detectors.keys import Keys, KeyTable, PackedRows, Spec
from sluice.models.detectors.layout import split
from sluice.models.detectors.regime import Shifts, regime_mask, shift_counts, signs
from sluice.models.detectors.scan import Segments
from sluice.models.detectors.seasonal import (
    MIN_PERIOD,
    SEASON_STATE,
    History,
    SeasonResult,
    season_scores,
    seasonal_cap,
)
from sluice.models.detectors.state_blob import pack, put_ring, ring_values, set_words, unpack
from sluice.models.detectors.structure import PAIR_STATE, pair_basis, structure_scores
from sluice.models.detectors.univariate import (
    DETECTORS,
    FEATURE_STATE,
    LEVEL,
    FeatureResult,
    Horizons,
    feature_basis,
    feature_scores,
    recenter,
)

STATE_VERSION = 11  # 11: context words uint16; rings, calibration of learning keys only
# a batch is processed in chunks of whole keys of about this many values (events x features),
# so that intermediate arrays stay in the CPU cache
CHUNK_VALUES = 50_000
DRIFT_PERSIST = 3.0  # |drift statistic| that keeps a key in a regime change (see regime)
BELOW_ONE = float(np.nextafter(1.0, 0.0))  # scores stay in [0, 1)
# bulk per-key calibration histograms per statistic: the reference (decayed counts), and the
# pending counts of the current block (whole numbers up to the block size: 8 bits)
CALIBRATION, PENDING = "cal", "calp"


@dataclass
class OnlineAnomalyConfig:
    """Settings of :class:`OnlineAnomalyDetector`; every default works out of the box."""

    features: list[str]
    key: str | None = None
    warmup: int = 30  # events of a key before its statistics are scored at all
    horizon: int = 300  # events over which a key's level and spread are learned
    target_alert_rate: float = 0.0005  # share of normal events that alert (1 in 2,000)
    max_keys: int = 100_000
    short_horizon: int = 8
    quiet_horizon: int = 250  # events over which an incident's surprise damps later onsets
    calibration_horizon: int = 5000  # events of a key its calibration remembers
    calibration_events: int = 170  # events after warmup before a key may alert
    season_window: int = 720  # values kept per key and feature for seasonality (0 = off)


@dataclass
class ScoreResult:
    """Per-row outputs: score in [0, 1) (1 - calibrated tail probability), alert flag, reason,
    and the onset score (the score on events that start an incident, else 0)."""

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
    drift: np.ndarray = field(default_factory=lambda: np.zeros(0))
    returning: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    score: np.ndarray = field(default_factory=lambda: np.zeros(0))
    onset: np.ndarray = field(default_factory=lambda: np.zeros(0))
    alert: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    young: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    evidence: np.ndarray = field(default_factory=lambda: np.zeros(0))  # calibrated p (c, n)
    age: np.ndarray = field(default_factory=lambda: np.zeros(0))
    context: ContextResult | None = None
    state: dict[str, np.ndarray] = field(default_factory=dict)
    calibration: np.ndarray | None = None  # final (k, 2, s, bins) of the keys that learned


class OnlineAnomalyDetector:
    """Streaming per-key multivariate anomaly detector (see the module docstring)."""

    def __init__(self, config: OnlineAnomalyConfig) -> None:
        if not config.features:
            raise ModelError("online_anomaly needs at least one feature")
        if not 0.0 < config.target_alert_rate < 1.0:
            raise ModelError("target_alert_rate must be between 0 and 1")
        if config.max_keys < 1 or config.horizon < 2 or config.warmup < 0:
            raise ModelError("max_keys must be >= 1, horizon >= 2 and warmup >= 0")
        if config.calibration_horizon < 50 or config.calibration_events < 0:
            raise ModelError("calibration_horizon must be >= 50 and calibration_events >= 0")
        if config.season_window and config.season_window < 4 * MIN_PERIOD:
            raise ModelError(f"season_window must be 0 (off) or >= {4 * MIN_PERIOD}")
        reuse_freed_memory()  # batches allocate many large temporaries
        self.config = config
        self.p = len(config.features)
        self.hz = Horizons.from_events(config.horizon, config.short_horizon)
        self.cal = CalibrationParams(horizon=config.calibration_horizon)
        self.drift = DriftParams()
        self.components = [c for c in COMPONENTS if self.p > 1 or c != "structure"]
        self.n_stats = len(self.components) + 1  # the components, then their combination
        self.n_pairs = self.p * (self.p - 1) // 2
        self.window = config.season_window
        self.refresh = max(4 * MIN_PERIOD, self.window // 2)
        self.chunk = max(CHUNK_VALUES // self.p, 1024)
        # zeros, not NaN: only values written for a key are ever read (see History.at). Memory
        # follows what a key learned: a ring is position-major (a key with a few values
        # shares pages with others), the calibration of a key that has learned nothing yet
        # is derived, not stored (see _calibration_state), a bitset word is 16 bits
        bulk: Spec = {
            "ctx": ((self.p, WORDS), 0.0),
            CALIBRATION: ((self.n_stats, N_BINS), 0.0),
            PENDING: ((self.n_stats, N_BINS), 0.0),
        }
        if self.window:
            bulk["buf"] = ((self.window, self.p), 0.0)
        if self.cal.block > np.iinfo(np.uint8).max:
            raise ModelError("calibration blocks must fit pending counts in 8 bits")
        dtypes = {"ctx": np.uint16, CALIBRATION: np.float64, PENDING: np.uint8}
        self.keys = KeyTable(config.max_keys, self._fresh_state(), bulk, dtypes, frozenset(["buf"]))
        self.events = 0
        # derived from the whole state, kept between calls until it changes (see _changed)
        self._summary: tuple[np.ndarray, float] | None = None
        self._derived: PackedRows | None = None
        # season analyses of keys at a refresh point, by slot (scoring without learning)
        self._refreshed: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _fresh_state(self) -> dict[str, tuple[tuple[int, ...], float]]:
        spec: dict[str, tuple[tuple[int, ...], float]] = {
            name: ((self.p,), np.nan if name == "prev" else 0.0) for name in FEATURE_STATE
        }
        spec.update({"dev": ((self.p,), 0.0), "reg": ((self.p,), 0.0)})
        spec.update({name: ((self.n_pairs,), 0.0) for name in PAIR_STATE})
        spec.update({name: ((self.p,), 0.0) for name in SEASON_STATE})
        spec.update({name: ((self.p,), 0.0) for name in DRIFT_STATE})
        spec.update({name: ((self.p,), 0.0) for name in CONTEXT_STATE})
        spec[SINCE_STATE] = ((), 0.0)
        spec.update({name: ((), 0.0) for name in NOVELTY_STATE})
        spec.update({name: ((), 0.0) for name in ONSET_STATE})
        spec[EPISODE_STATE] = ((1 + 2 * self.n_stats,), 0.0)
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
        """The alert threshold on the score: ``1 - target_alert_rate``."""
        return 1.0 - self.config.target_alert_rate

    def _key_summary(self) -> tuple[np.ndarray, float]:
        """Keys shifted up and down per feature (2, p), and how many keys have history
        (counted over every key once, then kept up to date by :meth:`_summarise`)."""
        if self._summary is None:
            used = self.keys.used
            known = float(np.count_nonzero(used & (self.keys.arrays["count"] > 0)))
            self._summary = (shift_counts(self.keys.arrays["dev"], used), known)
        return self._summary

    def _summarise(self, dev: np.ndarray, count: np.ndarray, sign: float) -> None:
        """Add (``sign`` 1) or remove (-1) keys with shift signs ``dev`` (m, p) and event
        counts ``count`` (m,) to the running key summary: it follows the keys a batch
        changes instead of being counted over every key again (whole numbers: exact)."""
        if self._summary is None:
            return
        counts, known = self._summary
        every = np.ones(dev.shape[0], dtype=bool)
        counts = counts + sign * shift_counts(dev, every)
        self._summary = (counts, known + sign * float(np.count_nonzero(count > 0)))

    def _changed(self) -> None:
        """Forget what was derived from the state (call whenever the state changes)."""
        self._derived = None
        self._refreshed = {}

    def prepare(self) -> None:
        """Derive now what scoring without learning needs (key summary, per-key basis), so
        that the first request after a restore does not wait for it."""
        self._key_summary()
        self._basis(np.zeros(1, dtype=np.int64))

    def _basis(self, slots: np.ndarray) -> dict[str, np.ndarray]:
        """What the detectors derive from the state before an event, for keys ``slots``
        scored without learning (one event each); derived for all keys at once and kept
        until the state changes."""
        cap = self.keys.cap
        if self._derived is None:
            st = self.keys.gather(np.arange(cap + 1))  # slot ``cap`` is virtual: a fresh key
            parts = feature_basis(st, self.hz)
            if self.p > 1:
                parts.update(pair_basis(st))
            self._derived = PackedRows(parts)
        return self._derived.gather(np.minimum(slots, cap))

    def score_learn(self, keys: Keys, X: np.ndarray) -> ScoreResult:
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
        slots = self.keys.assign(keys, n, warm=self.config.warmup)
        self._changed()
        gone = self.keys.evicted_rows  # new keys may have evicted others
        if gone:
            self._summarise(gone["dev"], gone["count"], -1.0)
        parts = self._run(slots, X, learn=True)
        reference, pending = self.keys.arrays[CALIBRATION], self.keys.arrays[PENDING]
        for part in parts:
            self._summarise(part.st["dev"].T, part.st["count"], -1.0)
            self._summarise(part.state["dev"], part.state["count"], 1.0)
            self.keys.scatter(part.segs.slot, part.state)
            if part.history is not None:
                part.history.write()
            update = part.context.update if part.context is not None else None
            if update is not None:
                update.write()
                self.keys.note("ctx", update.at)
            if part.calibration is not None:  # of the keys that learned (see _learned)
                learned = part.segs.slot[self._learned(part.state["count"])]
                reference[learned] = part.calibration[:, 0]
                pending[learned] = part.calibration[:, 1]
        self.events += n
        self._changed()
        return self._result(parts, X)

    def score(self, keys: Keys, X: np.ndarray) -> ScoreResult:
        """Score rows as :meth:`score_learn` would, without changing any state."""
        X = self._check(keys, X)
        if X.shape[0] == 0:
            return _empty()
        slots = self.keys.lookup(keys, X.shape[0])
        return self._result(self._run(slots, X, learn=False), X)

    def _check(self, keys: Keys, X: np.ndarray) -> np.ndarray:
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

    def _run(self, slots: np.ndarray, X: np.ndarray, *, learn: bool) -> list[_Batch]:
        parts = [self._observe(segs, X, learn) for segs in split(slots, self.chunk)]
        active, shifts = self._shifts(parts, X.shape[0])
        for part in parts:
            self._decide(part, active, shifts, learn)
            # the state before the chunk is no longer needed whole (one row per key of the
            # chunk: with many keys a batch would hold every key's row twice until stored)
            part.st = {k: part.st[k].copy() for k in ("dev", "count")}
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
        hist, season = self._season(Xs, segs, st, segs.single and not learn)
        dev, held = signs(fr.z[LEVEL], fr.short_mean, ready, segs, st["dev"])
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

    def _decide(self, part: _Batch, active: np.ndarray, shifts: Shifts, learn: bool) -> None:
        """Components, calibration, the score, the alert and the onset of one chunk (and its
        final state when ``learn``)."""
        segs, st, fr = part.segs, part.st, part.features
        muted, drift, reg_final, drift_state, pair = self._statistics(part, active, shifts)
        part.drift = drift
        structure = part.structure if self.p > 1 else None
        back = back_at_level(fr.z[LEVEL], fr.short_mean, part.returning)
        stats = component_stats(
            fr.z, seasonal_cap(part.season), part.season.z, structure, drift, muted, back
        )
        part.age = st["count"][segs.seg] + segs.offset
        warm = (part.age >= self.config.warmup) & fr.valid.any(axis=0)
        ctx = context_scores(
            part.X,
            segs,
            {k: st[k] for k in (*CONTEXT_STATE, SINCE_STATE)},
            st["count"] <= 0,
            self.keys.arrays["ctx"],
            stale=self.keys.evicted > 0,
            learn=learn,
        )
        calibrated = part.age >= self.config.warmup + self.config.calibration_events
        p, final = self._calibrate(part, stats, warm, calibrated, ctx)
        part.score = np.where(warm, np.minimum(1.0 - p, BELOW_ONE), 0.0)
        passes = part.score >= self.threshold()
        part.alert = passes & calibrated
        part.young = passes & ~calibrated
        init = np.array([st[k] for k in ONSET_STATE])
        fresh = st["count"] <= 0
        if fresh.any():
            init = np.where(fresh, fresh_onsets(segs.m), init)
        u = onset_surprise(p, ctx.familiar)
        anomalous = calibrated & (p <= EXCLUDE)
        starts, _, onset_state = onsets(
            u, part.alert, anomalous, warm, segs, init, self.config.quiet_horizon
        )
        final.update(zip(ONSET_STATE, onset_state, strict=True))
        part.onset = np.where(starts, onset_score(u), 0.0)
        part.context = ctx
        if learn:
            part.state = self._final_state(part, final, reg_final, pair, drift_state)

    def _statistics(
        self, part: _Batch, active: np.ndarray, shifts: Shifts
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Drift, regime and structure statistics of a chunk: the muted features (a global
        regime change), the drift statistic, and the final regime, drift and pair states."""
        segs, st, fr, ready = part.segs, part.st, part.features, part.ready
        dz, _, part.returning, drift_state = drift_scores(
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
        reg, reg_final = regime_mask(
            fr.z[LEVEL],
            fr.short_mean,
            ready,
            segs,
            st["reg"],
            shifts,
            active[segs.order],
            np.abs(dz) >= DRIFT_PERSIST,
        )
        if self.p > 1:
            e = np.minimum(np.maximum(fr.z[LEVEL], -8.0), 8.0)
            part.structure, part.partner, pair = structure_scores(
                e,
                ready & (e != 0) & ~reg,
                segs,
                self.hz.long,
                {k: st[k] for k in PAIR_STATE},
                part.basis,
            )
        else:
            part.structure = np.zeros_like(part.X)
            part.partner = np.zeros(part.X.shape, dtype=np.int64)
            pair = {k: st[k] for k in PAIR_STATE}
        return reg, dz, reg_final, drift_state, pair

    def _calibrate(
        self,
        part: _Batch,
        stats: np.ndarray,
        warm: np.ndarray,
        calibrated: np.ndarray,
        ctx: ContextResult,
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Calibrated p-value of each event (n,), and the final novelty and episode states; the
        final calibration histograms of the keys that learned go to ``part.calibration``."""
        segs, st = part.segs, part.st
        # keys that learn in the chunk; the others are too young for their p-values to be
        # used (every use needs a warm event) and have no calibration to store
        active = self._learned(st["count"] + segs.lengths)
        state = self._calibration_state(segs.slot[active], st["count"][active])
        # fresh keys start from the prior states (built only when a chunk has one)
        fresh = st["count"] <= 0
        novelty_init = np.array([st[k] for k in NOVELTY_STATE])
        episodes = st[EPISODE_STATE].T
        if fresh.any():
            novelty_init = np.where(fresh, fresh_novelty(segs.m), novelty_init)
            episodes = np.where(fresh[:, None], fresh_episodes(self.n_stats, segs.m), episodes)
        else:
            episodes = episodes.copy()  # calibrate writes the final episodes into it
        p_novel, novelty = novelty_probability(ctx.novel, warm, segs, novelty_init, NOVELTY_HORIZON)
        result = calibrate(
            stats, p_novel, warm, calibrated, segs, st["count"], state, episodes, self.cal, active
        )
        part.evidence = result.evidence
        part.calibration = state  # kept until the batch is stored
        return result.p, {**dict(zip(NOVELTY_STATE, novelty, strict=True)), EPISODE_STATE: episodes}

    def _calibration_state(self, slots: np.ndarray, count: np.ndarray) -> np.ndarray:
        """Calibration state (k, 2, s, bins) of keys ``slots``, which saw ``count`` events:
        stored for keys that learned, derived for the others (the bulk rows of evicted or
        younger keys are stale and never read)."""
        learned = self._learned(count)
        if learned.all() and (slots < self.keys.cap).all():  # every key's is stored
            state = np.empty((slots.shape[0], 2, self.n_stats, N_BINS))
            state[:, 0] = self.keys.arrays[CALIBRATION][slots]
            state[:, 1] = self.keys.arrays[PENDING][slots]
            return state
        state = unlearned_state(self.n_stats, np.where(learned, 0, count), self.cal)
        known = np.flatnonzero(learned & (slots < self.keys.cap))
        if known.size:
            state[known, 0] = self.keys.arrays[CALIBRATION][slots[known]]
            state[known, 1] = self.keys.arrays[PENDING][slots[known]]
        return state

    def _learned(self, count: np.ndarray) -> np.ndarray:
        """Keys whose calibration learned from an event (one ``warmup`` events old, or
        older), given their event counts; the others' calibration is derived from the count
        (see :func:`~sluice.models.detectors.calibrate.unlearned_state`)."""
        return count > self.config.warmup

    def _final_state(
        self,
        part: _Batch,
        final: dict[str, np.ndarray],
        reg_final: np.ndarray,
        pair: dict[str, np.ndarray],
        drift: dict[str, np.ndarray],
    ) -> dict[str, np.ndarray]:
        """Each key's state after the chunk, (m, ...) per name as the key table stores it."""
        segs, st = part.segs, part.st
        state = {k: v.T for k, v in part.features.state.items()}
        state.update(final)
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
        self, Xs: np.ndarray, segs: Segments, st: dict[str, np.ndarray], keep: bool = False
    ) -> tuple[History | None, SeasonResult]:
        """Seasonality of a chunk; ``keep``: one event per key scored without learning, so
        the season analyses of keys at a refresh point are kept until the state changes."""
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
        kept = self._refreshed if keep else None
        return hist, season_scores(Xs, hist, init, self.refresh, kept)

    def _result(self, parts: list[_Batch], X: np.ndarray) -> ScoreResult:
        n = X.shape[0]
        score, anomaly, onset = np.empty(n), np.empty(n, dtype=bool), np.empty(n)
        reason = np.full(n, "", dtype=object)
        for part in parts:
            rows = part.segs.order
            score[rows] = part.score
            onset[rows] = part.onset
            anomaly[rows] = part.alert
            explain(part, self.config, reason)
        return ScoreResult(score, anomaly, reason, onset)

    def get_state(self, *, dirty: bool = False) -> bytes:
        """Serialise all learned state (exactly restorable with :meth:`set_state`), or
        (``dirty``) only the keys changed since ``keys.clean()``: a delta that
        :meth:`set_state` replays on the state it was taken after."""
        arrays, keys, meta = self.keys.export(dirty=dirty)
        slots = arrays["_slots"] if dirty else np.arange(self.keys.cap)
        used, count = arrays["_used"], self.keys.arrays["count"][slots]
        base = arrays.pop("_base") if dirty else np.zeros(count.shape)
        if dirty:  # slots whose keys learned from nothing since the base: bitsets replaced
            arrays["_renewed"] = ~used | (base <= 0)
        if self.window:  # the values each key got since the base (a young key holds few)
            n = np.where(used, np.minimum(count - base, self.window), 0).astype(np.int64)
            arrays["buf_n"] = n.astype(np.int32)
            arrays["buf"] = ring_values(self.keys.arrays["buf"], slots, count, n)
        # the calibration of the keys that learned (the others' is derived from their count);
        # in a delta the reference only where it rolled forward since the base, or was not
        # stored then
        learned = used & self._learned(count)
        arrays[PENDING] = self.keys.arrays[PENDING][slots[learned]]
        block = self.cal.block
        rolled = (count.astype(np.int64) - 1) // block != (base.astype(np.int64) - 1) // block
        rolled |= ~self._learned(base)
        arrays[CALIBRATION] = self.keys.arrays[CALIBRATION][slots[learned & rolled]]
        arrays["cal_rolled"] = rolled[learned]
        # the words with a bit set, of keys in use that saw a whole context (most of a bitset
        # stays empty); in a delta only the words written since the base, where tracked
        words = self.keys.arrays["ctx"]
        noted = self.keys.noted("ctx") if dirty else None
        if noted is None:
            seen = np.flatnonzero(used & (count >= LENGTH))
            at, arrays["ctx"] = set_words(words[slots[seen]], np.ones(seen.shape[0], dtype=bool))
            width = self.p * WORDS
            arrays["ctx_at"] = seen[at // width] * width + at % width
        else:
            width = self.p * WORDS
            row = np.searchsorted(slots, noted // width)  # noted words are of dirty slots
            arrays["ctx_at"] = (row * width + noted % width).astype(np.int64)
            arrays["ctx"] = words.reshape(-1)[noted] if noted.size else words.reshape(-1)[:0]
        header = {
            "version": STATE_VERSION,
            "config": asdict(self.config),
            "keys": keys,
            "events": self.events,
            **meta,
        }
        payload: dict[str, np.ndarray] = {f"s_{k}": v for k, v in arrays.items()}
        payload["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
        return pack(payload)

    def set_state(self, blob: bytes) -> None:
        """Restore state produced by :meth:`get_state` of a detector with the same features."""
        try:
            data = unpack(blob)
            header = json.loads(bytes(data["header"]).decode())
            arrays = {k[2:]: v for k, v in data.items() if k.startswith("s_")}
        except (OSError, ValueError, KeyError) as exc:
            raise StateError(f"online_anomaly state is unreadable: {exc}") from exc
        if header.get("version") != STATE_VERSION:
            raise StateError(
                f"online_anomaly state version {header.get('version')} is not {STATE_VERSION}: "
                "it was saved by another version of sluice, whose per-key state layout this "
                "one does not read (the model has to learn again)"
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
        delta = "_slots" in arrays  # a delta (get_state(dirty=True))
        try:
            self._set_bulk(arrays, header, delta)
        except (KeyError, IndexError, ValueError) as exc:
            raise StateError(f"online_anomaly state has damaged per-key arrays: {exc}") from exc
        self.events = int(header["events"])
        self._changed()
        self._summary = None

    def _set_bulk(self, arrays: dict[str, np.ndarray], header: dict[str, Any], delta: bool) -> None:
        """Restore the small state (or replay a delta's), then the bulk arrays of its keys."""
        keys = self.keys
        if delta:
            keys.apply(arrays, header["keys"], header)
            slots = np.asarray(arrays["_slots"], dtype=np.int64)
        else:
            keys.restore(arrays, header["keys"], header)
            slots = np.arange(keys.cap)
        used, count = np.asarray(arrays["_used"], dtype=bool), keys.arrays["count"][slots]
        if self.window:
            put_ring(keys.arrays["buf"], slots, count, arrays["buf_n"], arrays["buf"])
        learned = slots[used & self._learned(count)]
        keys.arrays[PENDING][learned] = arrays[PENDING]
        keys.arrays[CALIBRATION][learned[np.asarray(arrays["cal_rolled"], dtype=bool)]] = arrays[
            CALIBRATION
        ]
        bits = keys.arrays["ctx"]
        if delta:  # a key's bits only grow: clear the slots that learned from nothing (and
            # of the others a delta may hold only the words written since the last one)
            bits[slots[np.asarray(arrays["_renewed"], dtype=bool)]] = 0
        at = np.asarray(arrays["ctx_at"], dtype=np.int64)
        row, col = np.divmod(at, self.p * WORDS)
        bits[slots[row], col // WORDS, col % WORDS] = arrays["ctx"]


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


def _empty() -> ScoreResult:
    return ScoreResult(np.zeros(0), np.zeros(0, dtype=bool), np.zeros(0, dtype=object), np.zeros(0))


__all__ = ["DETECTORS", "OnlineAnomalyConfig", "OnlineAnomalyDetector", "ScoreResult"]
