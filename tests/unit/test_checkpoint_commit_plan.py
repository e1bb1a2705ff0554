"""A checkpoint commit that plans the next epoch in the same transaction (local runner)."""

from __future__ import annotations

from pathlib import Path

from sluice.config.loader import load_pipeline
from sluice.core.settings import Settings
from sluice.runners.local import LocalRunner
from sluice.storage.checkpoints import CheckpointStore
from sluice.storage.db import get_engine
from sluice.storage.lake_tables import read_lake_table


def test_commit_with_plan_commits_and_plans_together(tmp_path: Path) -> None:
    store = CheckpointStore(get_engine(f"sqlite:///{tmp_path / 'metadata.db'}"))
    store.plan("p", 1, {"line": 10})
    store.commit("p", 1, {"line": 10}, {"op": b"s1"}, plan=(2, {"line": 20}))
    ckpt = store.load("p")
    assert (ckpt.epoch, ckpt.position, ckpt.states) == (1, {"line": 10}, {"op": b"s1"})
    assert (ckpt.planned_epoch, ckpt.planned_position) == (2, {"line": 20})
    store.commit("p", 2, {"line": 20}, {"op": b"s2"})  # without a plan: none pending
    ckpt = store.load("p")
    assert (ckpt.epoch, ckpt.planned_epoch, ckpt.planned_position) == (2, None, None)
    store.close()
    store.commit("p", 3, {"line": 30}, {}, plan=(4, {"line": 40}))  # reopens the connection
    assert store.load("p").planned_epoch == 4


def test_a_run_of_small_epochs_leaves_nothing_planned(tmp_path: Path) -> None:
    data = tmp_path / "events.jsonl"
    data.write_text("".join(f'{{"id": {i}, "v": {i / 2}}}\n' for i in range(50)))
    pipeline_file = tmp_path / "p.yaml"
    pipeline_file.write_text(
        f"name: small\nsource: {{type: file, path: '{data}', format: json}}\n"
        "schema: {id: long, v: double}\nbatch: {max_rows: 7, max_latency: 1h}\n"
        "sinks:\n  - {type: lake, table: out, partition_by: none}\n"
    )
    settings = Settings(home=tmp_path / "home")
    stats = LocalRunner(load_pipeline(pipeline_file), settings, until_idle=True).run()
    assert stats.epochs == 8
    store = CheckpointStore(get_engine(str(settings.metadata_url)))
    ckpt = store.load("small")
    assert (ckpt.epoch, ckpt.planned_epoch) == (8, None)
    ids = read_lake_table(settings, "out", columns=["id"]).column("id").to_pylist()
    assert sorted(ids) == list(range(50))
