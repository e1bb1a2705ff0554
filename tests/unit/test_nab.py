"""NAB scorer on hand-made series whose scores can be worked out by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sluice.evaluation.nab import (
    PROFILES,
    NabSeries,
    find_nab_dataset,
    load_nab,
    probation_length,
    row_weights,
    score_nab,
)
from sluice.models.metrics import binary_metrics
from tests.nab_data import write_tiny_nab


def _series() -> list[NabSeries]:
    # 100 rows: probation = 15 rows; windows at rows 40-49 and 70-79
    return [
        NabSeries("cat/a.csv", np.zeros(100), [(40, 49), (70, 79)]),
        NabSeries("cat/b.csv", np.zeros(100), []),
    ]


def _scores(fire_at: dict[str, list[int]]) -> dict[str, np.ndarray]:
    out = {}
    for s in _series():
        a = np.zeros(100)
        a[fire_at.get(s.name, [])] = 1.0
        out[s.name] = a
    return out


def test_probation_rule() -> None:
    assert probation_length(100) == 15
    assert probation_length(10_000) == 750


def test_null_and_perfect_detectors() -> None:
    null = score_nab(_series(), _scores({}))
    perfect = score_nab(_series(), _scores({"cat/a.csv": [40, 70]}))
    for name in PROFILES:
        assert null.profiles[name].score == pytest.approx(0.0)
        assert perfect.profiles[name].score == pytest.approx(100.0)
        assert perfect.profiles[name].tp == 2


def test_late_detection_and_false_positive_by_hand() -> None:
    # detection at the last row of window 1 is worth sigma(-1/10)/sigma(-1);
    # a detection at row 20 (before any window) costs fp; window 2 is missed.
    sig = lambda y: 2.0 / (1.0 + np.exp(5.0 * y)) - 1.0  # noqa: E731
    late = sig(-1 / 10) / sig(-1.0)
    report = score_nab(_series(), _scores({"cat/a.csv": [20, 49]}), profiles=["standard"])
    # threshold sweep: firing (raw = late - 0.11 - 1) beats never firing (-2)
    raw = late - 0.11 - 1.0
    assert report.profiles["standard"].raw == pytest.approx(raw)
    assert report.profiles["standard"].score == pytest.approx(100 * (raw + 2) / 4)


def test_false_positive_after_window_is_discounted() -> None:
    weight, window = row_weights(100, [(40, 49)], PROFILES["standard"])
    assert window[10] == -2 and window[45] == 0 and window[60] == -1
    assert weight[50] > weight[60] > weight[99] >= -0.11
    assert weight[20] == pytest.approx(-0.11)


def test_binary_metrics() -> None:
    y = np.array([0, 0, 1, 1])
    m = binary_metrics(y, np.array([0, 1, 1, 1]), np.array([0.1, 0.6, 0.7, 0.9]))
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == 1.0
    assert m["roc_auc"] == 1.0 and m["average_precision"] == 1.0


def test_find_and_load_a_tiny_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "nab"
    windows = write_tiny_nab(root)
    monkeypatch.setenv("SLUICE_NAB_PATH", str(root))
    assert find_nab_dataset() == root
    series = load_nab()
    assert [s.name for s in series] == sorted(windows)
    assert all(s.windows == [windows[s.name]] for s in series)
    assert load_nab(categories=["other"])[0].name == "other/c.csv"
    spikes = {s.name: (np.abs(s.values - np.median(s.values)) > 10).astype(float) for s in series}
    report = score_nab(series, spikes)
    assert report.profiles["standard"].tp == 3
    assert report.profiles["standard"].score > 90
