"""NAB scorer on hand-made series whose scores can be worked out by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sluice.models.nab import (
    PROFILES,
    NabSeries,
    binary_metrics,
    evaluate_nab,
    find_nab_dataset,
    probation_length,
    row_weights,
    score_nab,
)


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


def test_find_and_evaluate_on_a_tiny_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "nab"
    (root / "labels").mkdir(parents=True)
    (root / "demo").mkdir()
    ts = np.arange("2020-01-01T00:00", 400, dtype="datetime64[m]")
    values = np.random.default_rng(0).normal(size=400)
    values[300] += 30.0
    lines = ["timestamp,value"] + [
        f"{str(t).replace('T', ' ')}:00,{v}" for t, v in zip(ts, values, strict=True)
    ]
    (root / "demo" / "s.csv").write_text("\n".join(lines) + "\n")
    window = [
        [
            f"{str(ts[290]).replace('T', ' ')}:00.000000",
            f"{str(ts[310]).replace('T', ' ')}:00.000000",
        ]
    ]
    (root / "labels" / "combined_windows.json").write_text(json.dumps({"demo/s.csv": window}))
    monkeypatch.setenv("SLUICE_NAB_PATH", str(root))
    assert find_nab_dataset() == root

    class Spike:
        def score_learn(self, keys: object, X: np.ndarray) -> object:
            class R:
                score = (np.abs(X[:, 0]) > 10).astype(float)

            return R()

    report = evaluate_nab(Spike, batch_size=64)
    assert report.profiles["standard"].tp == 1
    assert report.profiles["standard"].score > 50
