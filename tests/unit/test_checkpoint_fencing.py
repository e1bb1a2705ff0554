"""Partition-task checkpoints: claims fence off a replica whose partitions moved on."""

from __future__ import annotations

from pathlib import Path

import pytest

from sluice.storage.checkpoints import CheckpointStore, FencedError, StreamCommit
from sluice.storage.db import get_engine

STREAM = "p#topic/0"


@pytest.fixture
def store(tmp_path: Path) -> CheckpointStore:
    return CheckpointStore(get_engine(f"sqlite:///{tmp_path / 'metadata.db'}"))


def _commit(epoch: int, offset: int) -> StreamCommit:
    return StreamCommit(STREAM, epoch, {"offsets": {"topic/0": offset}}, {"op": b"state"})


def test_owner_plans_and_commits(store: CheckpointStore) -> None:
    assert store.claim(STREAM, "a").epoch == 0
    store.plan_many({STREAM: (1, {"offsets": {"topic/0": 10}, "from": 0})}, owner="a")
    store.commit_many([_commit(1, 10)], owner="a")
    ckpt = store.load(STREAM)
    assert (ckpt.epoch, ckpt.position, ckpt.planned_epoch) == (
        1,
        {"offsets": {"topic/0": 10}},
        None,
    )
    assert ckpt.states == {"op": b"state"}


def test_a_replica_whose_task_was_claimed_cannot_plan_or_commit(store: CheckpointStore) -> None:
    store.claim(STREAM, "a")
    store.plan_many({STREAM: (1, {"offsets": {"topic/0": 10}, "from": 0})}, owner="a")
    # "a" stalls; the group gives the partition to "b", which sees the planned epoch
    taken = store.claim(STREAM, "b")
    assert (taken.planned_epoch, taken.planned_position) == (
        1,
        {"offsets": {"topic/0": 10}, "from": 0},
    )
    with pytest.raises(FencedError):
        store.commit_many([_commit(1, 10)], owner="a")
    with pytest.raises(FencedError):
        store.plan_many({STREAM: (2, {"offsets": {"topic/0": 20}, "from": 10})}, owner="a")
    store.commit_many([_commit(1, 10)], owner="b")
    assert store.load(STREAM).epoch == 1


def test_a_fenced_commit_leaves_the_other_streams_untouched(store: CheckpointStore) -> None:
    other = "p#topic/1"
    store.claim(STREAM, "a")
    store.claim(other, "a")
    store.claim(STREAM, "b")
    with pytest.raises(FencedError) as raised:
        store.commit_many(
            [StreamCommit(other, 1, {"offsets": {"topic/1": 5}}, {}), _commit(1, 10)], owner="a"
        )
    assert raised.value.stream == STREAM
    assert store.load(other).epoch == 0  # the whole transaction rolled back


def test_partition_tasks_fold_into_their_pipeline_and_reset_together(
    store: CheckpointStore,
) -> None:
    for stream, epoch in (("p#t/0", 3), ("p#t/1", 4), ("q", 7), ("p_x#t/0", 1)):
        store.commit_many([StreamCommit(stream, epoch, {"offsets": {}}, {"op": b"s"})])
    folded = {e["pipeline"]: (e["epoch"], e["partitions"]) for e in store.all()}
    assert folded == {"p": (7, 2), "q": (7, 0), "p_x": (1, 1)}
    assert sorted(t["task"] for t in store.tasks("p")) == ["t/0", "t/1"]
    store.reset("p")
    assert {e["pipeline"] for e in store.all()} == {"q", "p_x"}  # "_" is not a wildcard
    assert store.load("p#t/0").states == {}
