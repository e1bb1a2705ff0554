"""Child processes in tests: the ``sluice`` command line and killing a run mid-way."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path


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


def start_run(pipeline: Path, home: Path, *extra: str) -> subprocess.Popen[bytes]:
    """``sluice run PIPELINE --until-idle --quiet [EXTRA]`` as a child with its own home."""
    return subprocess.Popen(
        sluice_command("run", str(pipeline), "--until-idle", "--quiet", *extra),
        env={**os.environ, "SLUICE_HOME": str(home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def committed_epoch(home: Path, pipeline: str) -> int:
    """The epoch of ``pipeline``'s checkpoint in the SQLite metadata DB (0 before any)."""
    db = home / "metadata.db"
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            row = conn.execute(
                "select epoch from checkpoints where pipeline = ?", (pipeline,)
            ).fetchone()
    except sqlite3.OperationalError:
        return 0
    return int(row[0]) if row else 0
