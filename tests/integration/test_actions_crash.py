"""SIGKILL a process that scored and committed actions, then restart: none lost, none new."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sluice.actions.engine import ActionEngine
from sluice.actions.service import ActionsService
from sluice.config.models import ActionConfig
from sluice.core.settings import Settings
from tests.integration.test_actions_receiver import Received, Receiver

CHILD = textwrap.dedent("""
    import sys, time
    import pyarrow as pa
    from sluice.actions.engine import ActionEngine
    from sluice.config.models import ActionConfig
    from sluice.core.context import EpochContext
    from sluice.core.settings import Settings
    from sluice.storage.checkpoints import CheckpointStore

    home, url, dispatch = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    engine = ActionEngine([ActionConfig(name="hook", when="anomaly", type="webhook",
                                        url=url, key="device")],
                          pipeline="p", settings=Settings(home=home), dispatch=dispatch,
                          dispatcher_options={"workers": 2, "batch_size": 20}).start()
    n = 200
    table = pa.table({"device": [f"d{i % 10}" for i in range(n)], "seq": list(range(n)),
                      "anomaly": [True] * n})
    pending = engine.evaluate(table, EpochContext("p", 1))
    CheckpointStore(engine.db).commit("p", 1, {"offset": 1}, {"actions": engine.state()},
                                      [engine.outbox_writer(pending, 1)])
    engine.notify()
    print("committed", flush=True)
    time.sleep(600)
""")


def _slow_ok(_req: Received) -> int:
    time.sleep(0.01)
    return 200


@pytest.mark.parametrize("dispatch", [False, True], ids=["before-dispatch", "during-dispatch"])
def test_sigkill_then_restart_loses_nothing_and_repeats_no_key(
    settings: Settings, tmp_path: Path, dispatch: bool
) -> None:
    receiver = Receiver(respond=_slow_ok).start()
    url = f"{receiver.url}/alerts"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    child = subprocess.Popen(
        [sys.executable, str(script), str(settings.home), url, "1" if dispatch else "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "committed"
        if dispatch:
            deadline = time.monotonic() + 30
            while len(receiver.requests) < 30:
                assert time.monotonic() < deadline
                time.sleep(0.01)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        arrived_before = len(receiver.requests)
        engine = ActionEngine(
            [ActionConfig(name="hook", when="anomaly", type="webhook", url=url, key="device")],
            pipeline="p",
            settings=settings,
            dispatch=False,
        ).start()
        deadline = time.monotonic() + 60
        while engine.dispatcher.run_once():
            assert time.monotonic() < deadline
        engine.close()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        receiver.stop()
    keys = receiver.keys()
    assert len(set(keys)) == 200
    assert sorted({r.json["row"]["seq"] for r in receiver.requests}) == list(range(200))
    assert (arrived_before > 0) == dispatch
    stats = ActionsService(engine.db).stats()
    assert stats["by_status"]["delivered"] == 200
