"""SIGKILL a `sluice run` with an ``online_anomaly`` model mid-run, resume it: the lake holds
every event once, with the same alerts and scores as a run that was never interrupted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sluice.core.settings import Settings
from sluice.evaluation.generator import FEATURES, SCHEMA
from sluice.evaluation.lake import DetectorSpec, pipeline_text, read_lake, run_pipeline, write_input
from tests.processes import committed_epoch, kill_when, start_run

N_EVENTS = 60_000


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated telemetry (with injected anomalies) and a pipeline file scoring it."""
    from sluice.sources import synthetic

    work = tmp_path_factory.mktemp("replay")
    data = write_input(synthetic.telemetry(N_EVENTS, n_devices=20, seed=3), work / "t.jsonl")
    path = work / "replay.yaml"
    detector = DetectorSpec(FEATURES, key="device_id")
    batch = {"max_rows": 2000, "max_latency": "1h"}
    path.write_text(pipeline_text("replay", data, SCHEMA, [detector], event_time="ts", batch=batch))
    return path


def test_killed_and_resumed_run_matches_a_clean_run(pipeline: Path, tmp_path: Path) -> None:
    home = tmp_path / "crashed"
    kill_when(start_run(pipeline, home), lambda: committed_epoch(home, "replay") >= 3)
    first = committed_epoch(home, "replay")
    kill_when(start_run(pipeline, home), lambda: committed_epoch(home, "replay") >= first + 4)
    proc = start_run(pipeline, home)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()

    clean = run_pipeline(pipeline, tmp_path / "clean")
    resumed = read_lake(Settings(home=home), "scored")
    seq = resumed.column("seq").to_numpy()
    assert resumed.num_rows == clean.table.num_rows == N_EVENTS
    assert (seq == np.arange(N_EVENTS)).all()  # every event once
    want = {c: clean.output(c) for c in ("anomaly", "score", "onset")}
    got = {c: resumed.column(f"det_{c}").to_numpy(zero_copy_only=False) for c in want}
    assert want["anomaly"].sum() > 50
    assert int((got["anomaly"] != want["anomaly"]).sum()) == 0
    np.testing.assert_allclose(got["score"], want["score"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(got["onset"], want["onset"], rtol=0, atol=1e-6)
