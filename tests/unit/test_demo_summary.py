"""The demo's summary says what the nightly job did, not only that its tasks succeeded."""

from __future__ import annotations

from sluice.demo.run import _task_outcome


def test_a_promote_that_kept_the_old_version_says_so() -> None:
    kept = {"task": "promote", "state": "success", "log": "kept v1: f1 0.048 vs 0.051\n"}
    assert _task_outcome(kept) == "promote: kept v1"
    promoted = {"task": "promote", "state": "success", "log": "promoted m v2 (f1=0.9)"}
    assert _task_outcome(promoted) == "promote: promoted m v2"
    assert _task_outcome({"task": "check", "state": "success", "log": "rows: 3"}) == "check success"
    assert _task_outcome({"task": "train", "state": "failed", "log": None}) == "train failed"
