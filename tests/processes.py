"""Child processes in tests: the ``sluice`` command line and killing a run mid-way."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable


def sluice_command(*args: str) -> list[str]:
    """``python -m sluice.cli ARGS`` with this interpreter."""
    return [sys.executable, "-m", "sluice.cli", *args]


def kill_when(
    proc: subprocess.Popen[bytes], reached: Callable[[], bool], timeout: float = 120
) -> None:
    """SIGKILL ``proc`` once ``reached()``; fail if it ends or makes no progress first."""
    deadline = time.monotonic() + timeout
    while not reached() and proc.poll() is None:
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
