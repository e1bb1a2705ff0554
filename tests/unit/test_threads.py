"""Background threads (action rules, deliveries) run at a lower CPU priority, alone."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from sluice.core.threads import BACKGROUND_NICE, background_priority


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread priority: Linux")
def test_background_priority_lowers_the_calling_thread_only() -> None:
    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    seen: dict[str, int | bool] = {}

    def work() -> None:
        seen["done"] = background_priority()
        seen["nice"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert seen == {"done": True, "nice": min(before + BACKGROUND_NICE, 19)}
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before


def test_the_runner_scores_at_normal_priority_and_runs_rules_in_the_background(
    tmp_path: os.PathLike[str],
) -> None:
    """The rules' pool thread is lowered; the thread that runs the pipeline is not."""
    from pathlib import Path

    from sluice.config.loader import load_pipeline
    from sluice.core.settings import Settings
    from sluice.runners.local import LocalRunner

    home = Path(tmp_path)
    (home / "in.jsonl").write_text("".join(f'{{"v": {i}}}\n' for i in range(10)))
    (home / "p.yaml").write_text(
        f"name: p\nsource: {{type: file, path: {home / 'in.jsonl'}, format: json}}\n"
        "schema: {v: long}\n"
        f"actions: [{{name: a, when: 'v > 5', type: log, path: {home / 'a.jsonl'}}}]\n"
        "sinks: [{type: lake, table: t}]\n"
    )
    runner = LocalRunner(load_pipeline(home / "p.yaml"), Settings(home=home), until_idle=True)
    main = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    rules = runner._rules_pool.submit(
        lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    )
    runner.run()
    assert (home / "a.jsonl").read_text().count("\n") == 4
    if sys.platform.startswith("linux"):
        assert rules.result() == min(main + BACKGROUND_NICE, 19)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == main
