"""`sluice serve` applies log retention periodically; consumers' unread records are kept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson

from sluice.core.settings import Settings
from sluice.storage.log import EmbeddedLog
from tests.e2e.test_serve_crash import _wait_up
from tests.integration.test_api_server import free_port

TEN_DAYS_US = 10 * 86_400_000_000


def _events(n: int) -> list[bytes]:
    return [orjson.dumps({"n": i}) for i in range(n)]


def test_serve_trims_old_records_but_not_unconsumed_ones(tmp_path: Path) -> None:
    home = tmp_path / "home"
    log_dir = Settings(home=home).log_dir
    old = EmbeddedLog(log_dir, clock=lambda: time.time_ns() // 1000 - TEN_DAYS_US)
    old.append("events", _events(20))  # ten days old, nobody reads them
    old.append("held", _events(20))
    old.commit_consumer("held", "gone", 5)  # a pipeline that stopped at offset 5
    old.close()
    fresh = EmbeddedLog(log_dir)
    fresh.append("events", _events(3))
    fresh.append("held", _events(3))
    fresh.close()
    port = free_port()
    env = {
        **os.environ,
        "SLUICE_HOME": str(home),
        "SLUICE_LOG_RETENTION": "7d",
        "SLUICE_LOG_RETENTION_CHECK": "200ms",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "sluice.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    log = EmbeddedLog(log_dir)
    try:
        _wait_up(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (
            log.start_offset("events"),
            log.start_offset("held"),
        ) != (20, 5):
            time.sleep(0.1)
        assert log.start_offset("events") == 20  # the three fresh records stay
        assert log.start_offset("held") == 5  # the consumer has not read 5.. yet
        assert log.end_offset("held") == 23
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr.decode()
    text = stderr.decode()
    assert "stream 'held' keeps 15 records past its retention limits" in text
    assert "'gone' (at offset 5)" in text
    forget = subprocess.run(
        [sys.executable, "-m", "sluice.cli", "forget-consumer", "held", "gone"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert forget.returncode == 0, forget.stderr
    assert log.consumers("held") == {}
    again = subprocess.run(
        [sys.executable, "-m", "sluice.cli", "forget-consumer", "held", "gone"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert again.returncode == 2
    assert "stream 'held' has no consumer 'gone' (consumers: none)" in again.stderr
    log.close()
