"""The CLI makes Arrow's allocator return freed pages at once and keeps BLAS to one thread."""

from __future__ import annotations

import os
import subprocess
import sys

# Import the CLI, then allocate 256 MB in Arrow buffers on a thread that ends idle, free
# them, and print how much of it the process still holds.
PROBE = """
import threading
import sluice.cli
import numpy as np, psutil, pyarrow as pa
process = psutil.Process()
before = process.memory_info().rss
def work():
    buffers = [pa.allocate_buffer(1 << 20) for _ in range(256)]
    for buffer in buffers:
        np.frombuffer(buffer, dtype=np.uint8).fill(1)
thread = threading.Thread(target=work)
thread.start()
thread.join()
print((process.memory_info().rss - before) >> 20)
"""


def _run(code: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_the_cli_returns_freed_arrow_pages_to_the_system() -> None:
    env = {k: v for k, v in os.environ.items() if k != "MIMALLOC_PURGE_DELAY"}
    held_mb = int(_run(PROBE, env))
    assert held_mb < 64, f"{held_mb} MB of 256 MB freed Arrow buffers still held"


def test_a_purge_delay_the_user_set_is_kept() -> None:
    env = {**os.environ, "MIMALLOC_PURGE_DELAY": "250"}
    code = "import os, sluice.cli; print(os.environ['MIMALLOC_PURGE_DELAY'])"
    assert _run(code, env) == "250"


BLAS_THREADS = """
import sluice.cli
import numpy
from threadpoolctl import threadpool_info
print(sorted({pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}))
"""


def test_the_cli_keeps_numpy_blas_to_one_thread() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    assert _run(BLAS_THREADS, env) == "[1]"


def test_blas_threads_the_user_set_are_kept() -> None:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "2"}
    assert _run(BLAS_THREADS, env) == "[2]"
