"""NAB (Numenta Anomaly Benchmark): the labelled corpus and its scorer, from the published rules.

The scorer follows the current official NAB sweeper: the first ``min(floor(0.15 n), 750)``
rows of a file are probationary (not scored); a detection inside an anomaly window is worth
``tp * sigma(-(b - i + 1) / w) / sigma(-1)`` (only the earliest detection of a window counts,
a missed window costs ``-fn``); a detection outside windows costs ``-fp`` before the first
window and ``fp * sigma((i - b_prev) / (w_prev - 1))`` after one; one threshold per profile is
chosen by an exhaustive sweep over every distinct score of the corpus; the total is normalised
so that the null detector scores 0 and the perfect detector 100.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sluice.core.errors import ModelError, NotFoundError

NAB_ENV = "SLUICE_NAB_PATH"
PROBATION_PERCENT = 0.15
MAX_PROBATION = 750


@dataclass(frozen=True)
class NabProfile:
    """Cost weights of one NAB application profile."""

    name: str
    tp: float
    fp: float
    fn: float


PROFILES: dict[str, NabProfile] = {
    "standard": NabProfile("standard", tp=1.0, fp=0.11, fn=1.0),
    "reward_low_FP_rate": NabProfile("reward_low_FP_rate", tp=1.0, fp=0.22, fn=1.0),
    "reward_low_FN_rate": NabProfile("reward_low_FN_rate", tp=1.0, fp=0.11, fn=2.0),
}


@dataclass
class NabSeries:
    """One labelled NAB file: values, anomaly windows as inclusive row-index ranges, times."""

    name: str
    values: np.ndarray
    windows: list[tuple[int, int]]
    timestamps: np.ndarray | None = None  # datetime64[us], one per value

    @property
    def category(self) -> str:
        """The folder the file sits in (``realKnownCause`` ...)."""
        return self.name.split("/", 1)[0]


@dataclass
class ProfileResult:
    """Score of one profile over the corpus, with the swept threshold and per-category scores."""

    profile: str
    score: float
    threshold: float
    raw: float
    categories: dict[str, float] = field(default_factory=dict)
    tp: int = 0
    fp: int = 0
    fn: int = 0


@dataclass
class NabReport:
    """Scores of one detector on NAB: one :class:`ProfileResult` per profile."""

    detector: str
    profiles: dict[str, ProfileResult]
    files: int
    rows: int

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly view."""
        return {
            "detector": self.detector,
            "files": self.files,
            "rows": self.rows,
            "profiles": {k: vars(v) for k, v in self.profiles.items()},
        }


def find_nab_dataset(start: Path | None = None) -> Path:
    """Locate the NAB data: ``$SLUICE_NAB_PATH``, else ``../shared/datasets/nab`` from the repo."""
    env = os.environ.get(NAB_ENV)
    if env:
        path = Path(env).expanduser()
        if (path / "labels" / "combined_windows.json").is_file():
            return path
        raise NotFoundError(f"{NAB_ENV}={env} does not hold labels/combined_windows.json")
    here = (start or Path(__file__)).resolve()
    for parent in [here, *here.parents]:
        candidate = parent.parent / "shared" / "datasets" / "nab"
        if (candidate / "labels" / "combined_windows.json").is_file():
            return candidate
    raise NotFoundError(
        f"NAB dataset not found: set {NAB_ENV} or place it at "
        "../shared/datasets/nab (relative to the repository)"
    )


def _read_series(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    table = pacsv.read_csv(
        path,
        convert_options=pacsv.ConvertOptions(
            column_types={"timestamp": pa.timestamp("us"), "value": pa.float64()}
        ),
    )
    ts = table.column("timestamp").to_numpy().astype("datetime64[us]")
    return ts, table.column("value").to_numpy().astype(np.float64)


def load_nab(root: Path | None = None, categories: Iterable[str] | None = None) -> list[NabSeries]:
    """Load every labelled NAB file (optionally only some categories), sorted by name."""
    root = root or find_nab_dataset()
    windows = json.loads((root / "labels" / "combined_windows.json").read_text())
    wanted = set(categories) if categories is not None else None
    out = []
    for name in sorted(windows):
        if wanted is not None and name.split("/", 1)[0] not in wanted:
            continue
        ts, values = _read_series(root / name)
        rows = []
        for start, end in windows[name]:
            a = int(np.searchsorted(ts, np.datetime64(start.replace(" ", "T"), "us"), "left"))
            b = int(np.searchsorted(ts, np.datetime64(end.replace(" ", "T"), "us"), "right")) - 1
            if b >= a:
                rows.append((a, b))
        out.append(NabSeries(name, values, rows, ts))
    if not out:
        raise NotFoundError(f"no NAB files found under {root}")
    return out


def probation_length(n: int) -> int:
    """Rows at the start of a file that NAB does not score."""
    return min(int(np.floor(PROBATION_PERCENT * n)), MAX_PROBATION)


def _sigma(y: np.ndarray) -> np.ndarray:
    out = 2.0 / (1.0 + np.exp(5.0 * np.minimum(y, 50.0))) - 1.0
    return np.where(y > 3.0, -1.0, out)


def row_weights(
    n: int, windows: list[tuple[int, int]], profile: NabProfile
) -> tuple[np.ndarray, np.ndarray]:
    """Per-row value of a detection and its window index (-1 outside, -2 probationary)."""
    idx = np.arange(n, dtype=np.float64)
    weight = np.full(n, -profile.fp)
    window = np.full(n, -1, dtype=np.int64)
    max_tp = float(_sigma(np.array([-1.0]))[0])
    for k, (a, b) in enumerate(windows):
        w = float(b - a + 1)
        sl = slice(a, b + 1)
        weight[sl] = profile.tp * _sigma(-(b - idx[sl] + 1.0) / w) / max_tp
        window[sl] = k
        end = windows[k + 1][0] if k + 1 < len(windows) else n
        if end > b + 1 and w > 1:
            after = slice(b + 1, end)
            weight[after] = profile.fp * _sigma((idx[after] - b) / (w - 1.0))
    window[: probation_length(n)] = -2
    return weight, window


@dataclass
class _Corpus:
    score: np.ndarray
    weight: np.ndarray
    window: np.ndarray  # corpus-wide window id, -1 outside
    file_of: np.ndarray
    n_windows: int


def _corpus(
    series: list[NabSeries], scores: Mapping[str, np.ndarray], profile: NabProfile
) -> _Corpus:
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    offset = 0
    for f, s in enumerate(series):
        sc = np.asarray(scores[s.name], dtype=np.float64)
        if sc.shape != s.values.shape:
            raise ModelError(f"{s.name}: {sc.shape[0]} scores for {s.values.shape[0]} rows")
        weight, window = row_weights(len(sc), s.windows, profile)
        keep = window != -2
        win = window[keep]
        win = np.where(win >= 0, win + offset, -1)
        offset += len(s.windows)
        parts.append(
            (np.nan_to_num(sc[keep], nan=-np.inf), weight[keep], win, np.full(win.shape, f))
        )
    score, weight, window, file_of = (np.concatenate(p) for p in zip(*parts, strict=True))
    return _Corpus(score, weight, window, file_of, offset)


def _sweep(c: _Corpus, profile: NabProfile, scored_windows: np.ndarray) -> tuple[float, float]:
    """Best (raw total, threshold) over all thresholds; ties go to the higher threshold."""
    null = -profile.fn * len(scored_windows)
    order = np.argsort(-c.score, kind="stable")
    inc = np.where(c.window[order] < 0, c.weight[order], 0.0)
    in_win = np.flatnonzero(c.window[order] >= 0)
    wins = c.window[order][in_win]
    for w in np.unique(wins):
        pos = in_win[wins == w]
        run = np.maximum.accumulate(c.weight[order][pos])
        prev = np.concatenate([[-profile.fn], run[:-1]])
        inc[pos] = run - prev
    total = null + np.cumsum(inc)
    s = c.score[order]
    group_end = np.flatnonzero(np.append(s[1:] != s[:-1], True))
    group_end = group_end[np.isfinite(s[group_end])]
    if group_end.size == 0:
        return null, float("inf")
    best = group_end[int(np.argmax(total[group_end]))]
    if total[best] <= null:
        return null, float("inf")
    return float(total[best]), float(s[best])


def _raw_by_file(
    c: _Corpus, profile: NabProfile, threshold: float, n_files: int
) -> tuple[np.ndarray, np.ndarray, int, int]:
    det = c.score >= threshold
    raw = np.bincount(
        c.file_of[det & (c.window < 0)], c.weight[det & (c.window < 0)], minlength=n_files
    ).astype(np.float64)
    fp = int(np.count_nonzero(det & (c.window < 0)))
    best = np.full(c.n_windows, -profile.fn)
    hit = det & (c.window >= 0)
    np.maximum.at(best, c.window[hit], c.weight[hit])
    win_file = np.full(c.n_windows, -1)
    win_file[c.window[c.window >= 0]] = c.file_of[c.window >= 0]
    scored = win_file >= 0
    raw += np.bincount(win_file[scored], best[scored], minlength=n_files)
    tp = int(np.count_nonzero(best[scored] > -profile.fn))
    return raw, win_file, tp, fp


def score_profile(
    series: list[NabSeries], scores: Mapping[str, np.ndarray], profile: NabProfile
) -> ProfileResult:
    """NAB-score one profile: sweep the threshold, then normalise overall and per category."""
    c = _corpus(series, scores, profile)
    scored_windows = np.unique(c.window[c.window >= 0])
    raw_total, threshold = _sweep(c, profile, scored_windows)
    raw, win_file, tp, fp = _raw_by_file(c, profile, threshold, len(series))
    n_win = np.bincount(win_file[win_file >= 0], minlength=len(series))
    null, perfect = -profile.fn * len(scored_windows), profile.tp * len(scored_windows)
    categories: dict[str, float] = {}
    for cat in sorted({s.category for s in series}):
        files = np.array([s.category == cat for s in series])
        n = float(n_win[files].sum())
        cat_raw = float(raw[files].sum())
        # categories without windows report the raw (false-positive) cost instead
        categories[cat] = (
            100.0 * (cat_raw + profile.fn * n) / ((profile.tp + profile.fn) * n) if n else cat_raw
        )
    score = 100.0 * (raw_total - null) / (perfect - null) if perfect > null else 0.0
    return ProfileResult(
        profile.name,
        score,
        threshold,
        raw_total,
        categories,
        tp=tp,
        fp=fp,
        fn=len(scored_windows) - tp,
    )


def score_nab(
    series: list[NabSeries],
    scores: Mapping[str, np.ndarray],
    profiles: Iterable[str] = tuple(PROFILES),
    detector: str = "detector",
) -> NabReport:
    """Score precomputed per-file anomaly scores under the given profiles."""
    unknown = [p for p in profiles if p not in PROFILES]
    if unknown:
        raise ModelError(f"unknown NAB profile(s) {unknown}; available: {list(PROFILES)}")
    results = {p: score_profile(series, scores, PROFILES[p]) for p in profiles}
    return NabReport(detector, results, len(series), int(sum(len(s.values) for s in series)))
