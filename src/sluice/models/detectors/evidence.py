"""Evidence of ``online_anomaly``: one statistic per component, combined as p-values.

Each *component* looks at the event from one angle (level, trend, spread, rate of change,
stuck values, seasonality, cross-feature structure, slow drift) and yields the largest
statistic over the features, as a ``-log10`` surprise corrected for the number of features
looked at. Each component is calibrated on the key's own history (see
:mod:`sluice.models.detectors.calibrate`), so a component that is pure noise on some key -
trend on records with no time order, the level of a random walk - gives uniform p-values
there and cannot drown a strong one. The calibrated p-values, and the probability of the
event's context novelty (see :func:`novelty_probability`), are combined with the Cauchy
combination test (Liu & Xie 2020), valid under arbitrary dependence between the components
and dominated by the strongest evidence: ``T = mean(tan((1/2 - p_i) pi))``,
``p = 1/2 - arctan(T) / pi``.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtri

from sluice.models.detectors.scan import Segments, decayed_max, ew_scan, run_length

COMPONENTS = ("level", "trend", "spread", "rate", "stuck", "season", "structure", "drift")
NOVELTY_STATE = ("nw", "nr")  # EW weight and EW count of novel contexts per key
NOVELTY_HORIZON = 500  # events over which a key's rate of novel contexts is learned
NOVELTY_PRIOR = (2.0, 1.0)  # pseudo-events (weight, novel) of a fresh key: rate 1/2
# decayed maximum of a key's recent surprise, and events since its last onset candidate
# ... events since its last alert, and since its last anomalous event (see onsets)
ONSET_STATE = ("om", "oq", "oa", "oe")
REFRACTORY = 5  # an onset candidate this close after another belongs to the same incident
INCIDENT_GAP = 50  # alerts closer than this many events apart belong to one incident
ESCALATION = 1.5  # ... unless its surprise is this many times the recent maximum
TIE = 1e-9  # relative difference below which two surprises count as equal
ONSET_CAP = 16.0  # -log10 p: beyond it the published score 1 - p is 1 in float64
FAMILIAR_ONSET = 0.4  # share of its surprise an onset without a recent novel context keeps
P_FLOOR = 1e-300

KEEP_LEVEL = 1.0  # sigma off its level a value must be for the lingering statistics to count
RETURN_LEVEL = 3.0  # ... or, returning from a recent drift, beyond this (a new shift)


def back_at_level(
    level: np.ndarray, short_mean: np.ndarray, returning: np.ndarray | None = None
) -> np.ndarray:
    """Where a feature's value is back at its level (p, n): within :data:`KEEP_LEVEL` sigma,
    or on the other side of it from the recent events (the return after an incident), or
    within :data:`RETURN_LEVEL` sigma while ``returning`` from a recent drift (the level
    model learned part of the drift, so the return itself looks like a move)."""
    opposite = (level * short_mean < 0) & (np.abs(short_mean) >= KEEP_LEVEL)
    back = (np.abs(level) < KEEP_LEVEL) | opposite
    if returning is not None:
        back |= returning & (np.abs(level) < RETURN_LEVEL)
    return back


def component_stats(
    z: np.ndarray,
    cap: np.ndarray,
    season: np.ndarray,
    structure: np.ndarray | None,
    drift: np.ndarray,
    muted: np.ndarray,
    back: np.ndarray,
) -> np.ndarray:
    """The surprise of each component (c, n) from the detectors' statistics.

    ``z`` (5, p, n) are the per-feature detectors (level, trend, spread, rate, stuck),
    ``cap`` (p, n) the largest size the season lets them have, ``season``, ``structure`` and
    ``drift`` (p, n) the other statistics; ``muted`` (p, n) features are not scored (a global
    regime change). Where a value is ``back`` at its level (p, n), the statistics that echo
    the last events (trend, spread, rate, drift) say nothing about it, and a trend or a drift
    only speaks of a value that stands on its side of the level. Each component's surprise
    is ``-log10`` of the two-sided normal tail of its largest statistic over the features,
    corrected for ``p`` looks (computed in :mod:`sluice.models.detectors.kernels`).
    """
    from sluice.models.detectors import kernels  # numba, compiled on first use

    p, n = z.shape[1], z.shape[2]
    others = [season, drift] if structure is None else [season, structure, drift]
    out = np.empty((z.shape[0] + len(others), n))
    kernels.components()(
        np.ascontiguousarray(z),
        np.ascontiguousarray(cap),
        np.ascontiguousarray(np.array(others)),
        np.ascontiguousarray(muted),
        np.ascontiguousarray(back),
        float(np.log(p)),
        float(ndtri(1.0 - 0.5 / p)),
        out,
    )
    return out


def novelty_probability(
    novel: np.ndarray, learn: np.ndarray, segs: Segments, init: np.ndarray, horizon: int
) -> tuple[np.ndarray, np.ndarray]:
    """Probability of a novel context for each event (1 where its context is familiar), from
    the key's EW rate of novel contexts before it; and the final state (2, m)."""
    rows = np.array([learn.astype(np.float64), (novel & learn).astype(np.float64)])
    (w, r), final = ew_scan(rows, 1.0 - 1.0 / horizon, segs, init)
    rate = r / np.maximum(w, 1e-12)
    return np.where(novel, np.clip(rate, P_FLOOR, 1.0), 1.0), final


def onsets(
    u: np.ndarray,
    alert: np.ndarray,
    anomalous: np.ndarray,
    warm: np.ndarray,
    segs: Segments,
    init: np.ndarray,
    horizon: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where an event starts an incident, where an alert starts one, and the final state
    (4, m).

    A *candidate* beats the decayed maximum of its key's recent surprises ``u`` (decay over
    ``horizon`` events, so the peak of an incident keeps its repeats quiet for a while); a
    candidate within :data:`REFRACTORY` events of the previous one continues that incident
    (the rising edge of one incident starts it once) unless it is :data:`ESCALATION` times as
    surprising. Surprises count up to :data:`ONSET_CAP` (where the published score saturates),
    so one extreme event does not silence a key for long. The first ``alert`` after
    :data:`INCIDENT_GAP` events without one always starts an incident, so an action with
    ``when: "<m>_anomaly AND <m>_onset > 0"`` fires once per incident (and again only when it
    escalates). Likewise the first ``anomalous`` event (improbable enough that calibration
    keeps it out of the key's history, whatever the alert target) after as many events
    without one starts an incident.
    """
    top, since, calm, still = init
    u = np.minimum(u, ONSET_CAP)
    before, top_final = decayed_max(np.where(warm, u, 0.0), 1.0 - 1.0 / horizon, segs, top)
    # beats it by more than rounding: the running maximum is computed in a different order
    # for other batch cuts, and capped surprises tie exactly
    candidate = warm & (u > before * (1.0 + TIE))
    run, since_final = run_length(~candidate, segs, since)
    quiet_before = segs.shift(run, since) >= REFRACTORY
    stronger = u > ESCALATION * before
    quiet, calm_final = run_length(~alert, segs, calm)
    first_alert = alert & (segs.shift(quiet, calm) >= INCIDENT_GAP)
    normal, still_final = run_length(~anomalous, segs, still)
    first_anomalous = anomalous & (segs.shift(normal, still) >= INCIDENT_GAP)
    starts = candidate & (quiet_before | stronger) | first_anomalous
    state = np.array([top_final, since_final, calm_final, still_final])
    return starts | first_alert, first_alert, state


def onset_surprise(p: np.ndarray, familiar: np.ndarray) -> np.ndarray:
    """The surprise ``-log10 p`` an onset publishes, where that of an event whose key showed
    no novel context lately (``familiar``) counts :data:`FAMILIAR_ONSET` of itself: a spike of
    a shape the key has shown before is weaker evidence that a new incident starts (the
    premise of the contextual detector CAD OSE). Incidents start and escalate on it too."""
    u = -np.log10(np.maximum(p, P_FLOOR))
    return np.where(familiar, u * FAMILIAR_ONSET, u)


def onset_score(u: np.ndarray) -> np.ndarray:
    """The score of an incident's first event, ``1 - 10 ** -u`` from its published surprise
    ``u`` (see :func:`onset_surprise`)."""
    return np.minimum(1.0 - 10.0**-u, np.nextafter(1.0, 0.0))


def fresh_onsets(m: int) -> np.ndarray:
    """Onset state (4, m) of fresh keys: nothing seen, long past any candidate, alert and
    anomalous event."""
    gap = np.full(m, float(INCIDENT_GAP))
    return np.array([np.zeros(m), np.full(m, float(REFRACTORY)), gap, gap])


def fresh_novelty(m: int) -> np.ndarray:
    """Novelty state (2, m) of fresh keys."""
    return np.tile(np.array(NOVELTY_PRIOR)[:, None], (1, m))
