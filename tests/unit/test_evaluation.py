"""The evaluation harnesses on small inputs: pipeline file → runner → lake → figures."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from sluice.evaluation.baselines import halfspace_trees, key_groups, zscore
from sluice.evaluation.multivariate import MultivariateSpec, evaluate_multivariate
from sluice.evaluation.nab_corpus import evaluate_nab_corpus, nab_input
from sluice.evaluation.null_suite import NullSpec, evaluate_null
from sluice.evaluation.rate7 import evaluate_rate7
from tests.nab_data import write_tiny_nab
from tests.processes import sluice_command


@pytest.fixture(scope="module")
def tiny_nab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three fabricated NAB series (one spike each, inside its window) in two categories."""
    root = tmp_path_factory.mktemp("nab")
    write_tiny_nab(root)
    return root


def test_nab_input_interleaves_series_in_time_order(tiny_nab: Path) -> None:
    from sluice.evaluation.nab import load_nab

    series = load_nab(tiny_nab)
    data = nab_input(series)
    ts = data.column("timestamp").to_numpy()
    assert data.num_rows == sum(len(s.values) for s in series)
    assert (np.diff(ts) >= np.timedelta64(0)).all()
    names = data.column("series").to_numpy(zero_copy_only=False)
    assert (names[1:] != names[:-1]).sum() > 1000  # interleaved, not one file after another
    for s in series:
        rows = data.column("row").to_numpy()[names == s.name]
        assert (rows == np.arange(len(s.values))).all()


def test_nab_harness_scores_the_lake_columns(tiny_nab: Path) -> None:
    result = evaluate_nab_corpus(tiny_nab)
    figures = result.figures
    assert (figures["files"], figures["rows"]) == (3, 4500)
    onset = figures["detectors"]["online_anomaly: det_onset"]
    assert set(onset) == {"standard", "reward_low_FP_rate", "reward_low_FN_rate"}
    assert set(onset["standard"]["categories"]) == {"demo", "other"}
    # one 30-sigma spike per series, inside its window: every detector finds all three
    for name in ("online_anomaly: det_onset", "online_anomaly: det_score", "rolling z-score"):
        assert figures["detectors"][name]["standard"]["tp"] == 3, name
        assert figures["detectors"][name]["standard"]["score"] > 80, name
    assert result.tables[0].columns[0] == "detector"


def test_rolling_zscore_matches_its_definition() -> None:
    rng = np.random.default_rng(1)
    keys = rng.integers(0, 3, 600)
    X = rng.normal(size=(600, 2))
    got = zscore(keys, X, horizon=50, warmup=5).score
    alpha, want = 1 / 50, np.zeros(600)
    state: dict[int, list[float]] = {}
    for i, (k, row) in enumerate(zip(keys, X, strict=True)):
        n, mean, var = state.setdefault(int(k), [0, np.zeros(2), np.zeros(2)])
        if n >= 5:
            ok = var > 0
            want[i] = np.max(np.abs(row - mean)[ok] / np.sqrt(var[ok]), initial=0.0)
        if n:
            delta = row - mean
            state[int(k)] = [n + 1, mean + alpha * delta, (1 - alpha) * (var + alpha * delta**2)]
        else:
            state[int(k)] = [1, row.copy(), var]
    np.testing.assert_allclose(got, want, atol=1e-9)
    groups = list(key_groups(keys, 600))
    assert sorted(np.concatenate(groups).tolist()) == list(range(600))


def test_halfspace_trees_baseline_flags_an_outlier() -> None:
    rng = np.random.default_rng(2)
    X = rng.normal(size=(400, 2))
    X[350] = [40.0, -40.0]
    result = halfspace_trees(None, X)
    assert result.anomaly[350]
    assert result.score[350] > np.median(result.score[100:])
    assert result.anomaly.mean() < 0.2


def test_multivariate_harness_beats_the_rolling_zscore() -> None:
    result = evaluate_multivariate(MultivariateSpec(keys=4, per_key=1500))
    rows = result.figures["detectors"]
    assert result.figures["outliers"] > 40
    assert rows["online_anomaly"]["roc_auc"] >= rows["rolling z-score"]["roc_auc"], rows


def test_rate7_alert_rate_follows_the_target() -> None:
    result = evaluate_rate7(MultivariateSpec(keys=4, per_key=1500, outlier_rate=0.07))
    assert 0.035 <= result.figures["alert_rate"] <= 0.14, result.figures


def test_null_suite_alert_rates_with_default_settings() -> None:
    """Anomaly-free data of nine shapes: at most 3% alerts in events 30-199, 2% from 200 on."""
    result = evaluate_null(NullSpec(keys=4, per_key=1000))
    worst = result.figures["worst"]["det"]
    assert worst["0-29"] == 0.0, result.figures["rates"]
    assert worst["30-199"] <= 0.03, result.figures["rates"]
    assert worst["200+"] <= 0.02, result.figures["rates"]
    assert len(result.figures["rates"]) == 9


def test_models_evaluate_cli_prints_json_and_tables(tiny_nab: Path) -> None:
    args = ["models", "evaluate", "--dataset", "nab", "--nab-path", str(tiny_nab)]
    out = subprocess.run(sluice_command(*args, "--json"), capture_output=True, check=True)
    figures = json.loads(out.stdout)
    assert figures["dataset"] == "nab"
    assert figures["figures"]["detectors"]["online_anomaly: det_onset"]["standard"]["tp"] == 3
    text = subprocess.run(sluice_command(*args), capture_output=True, check=True, text=True)
    assert "reward_low_FN_rate" in text.stdout and "det_onset" in text.stdout
    bad = subprocess.run(
        sluice_command("models", "evaluate", "--dataset", "nope"), text=True, capture_output=True
    )
    assert bad.returncode != 0 and "nab, generator" in bad.stdout + bad.stderr


def test_generator_harness_keeps_its_quality() -> None:
    """`sluice models evaluate --dataset generator` on half the data: F1 of the lake's alerts."""
    from sluice.evaluation.generator import evaluate_generator

    result = evaluate_generator(events=100_000, devices=25)
    rows = result.figures["detectors"]
    ours = rows["online_anomaly"]
    assert ours["f1"] >= 0.9, ours
    assert ours["roc_auc"] >= 0.98, ours
    assert ours["drift_recall"] >= 0.75, ours
    assert ours["f1"] > rows["rolling z-score"]["f1"], rows


def _event_numbers(keys: np.ndarray) -> np.ndarray:
    nth = np.zeros(keys.size, dtype=np.int64)
    for key in np.unique(keys):
        nth[keys == key] = np.arange(int((keys == key).sum()))
    return nth


@pytest.fixture(scope="module")
def contract_run() -> object:
    """Multivariate records with 7% outliers, ``target_alert_rate: 0.07``, read from the lake."""
    from sluice.evaluation.multivariate import run_multivariate

    spec = MultivariateSpec(keys=3, per_key=1200, outlier_rate=0.07)
    return run_multivariate(spec, {"target_alert_rate": 0.07})[1]


def test_alert_column_is_the_documented_threshold_on_the_score(contract_run: object) -> None:
    """``m_anomaly`` iff ``m_score >= 1 - target_alert_rate`` from a key's event 200 (README)."""
    run = contract_run
    score, alert = run.output("score"), run.output("anomaly")  # type: ignore[attr-defined]
    nth = _event_numbers(run.column("key"))  # type: ignore[attr-defined]
    assert alert.sum() > 50
    np.testing.assert_array_equal(alert, (score >= 1 - 0.07) & (nth >= 200))
    assert ((score >= 0) & (score <= 1)).all()


def test_an_action_on_alert_and_onset_fires_once_per_incident(contract_run: object) -> None:
    """``m_onset`` is at most the score, and the first alert after 50 quiet events has one."""
    run = contract_run
    score, alert, onset = (run.output(c) for c in ("score", "anomaly", "onset"))  # type: ignore[attr-defined]
    keys = run.column("key")  # type: ignore[attr-defined]
    assert (onset <= score + 1e-12).all() and (onset >= 0).all()
    first_alerts = 0
    for key in np.unique(keys):
        here = np.flatnonzero(keys == key)
        last_alert = -(10**9)
        for i in here.tolist():
            if alert[i]:
                if _quiet_events(here, last_alert, i) >= 50:
                    first_alerts += 1
                    assert onset[i] > 0, f"event {i} starts an incident but has no onset"
                last_alert = i
    assert first_alerts > 5


def _quiet_events(rows: np.ndarray, last_alert: int, i: int) -> int:
    """Events of the key between its previous alert (row ``last_alert``) and row ``i``."""
    return int(np.searchsorted(rows, i) - np.searchsorted(rows, last_alert) - 1)


def test_young_keys_say_why_they_do_not_alert(contract_run: object) -> None:
    """An event scoring past the threshold before its key is calibrated says so in its reason."""
    run = contract_run
    reason, score = run.output("reason"), run.output("score")  # type: ignore[attr-defined]
    nth = _event_numbers(run.column("key"))  # type: ignore[attr-defined]
    held = (nth < 200) & (score >= 1 - 0.07)
    assert held.sum() > 3
    assert all("calibrating" in r for r in reason[held]), reason[held]
