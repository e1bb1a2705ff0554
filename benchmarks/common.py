"""Shared helpers for the benchmarks: cached data, timed subprocesses with peak RSS."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).parent / ".data"
RESULTS = Path(__file__).parent / "results"
# the head of a benchmark pipeline file over telemetry_file() (a str.format template: {data})
TELEMETRY_FILE_PIPELINE = """\
source: {{type: file, path: "{data}", format: json}}
schema: {{device_id: string, ts: timestamp, temperature: double, pressure: double,
          vibration: double, status: string}}
event_time: ts
transforms:
  - filter: "status <> 'maintenance'"
"""


@dataclass
class Measured:
    """Wall time and peak resident memory of one child process."""

    seconds: float
    peak_rss_mb: float
    output: str
    cpu_seconds: float = 0.0  # user + system time: less sensitive than wall time to other jobs


def run_measured(cmd: list[str], env: dict[str, str] | None = None) -> Measured:
    """Run ``cmd`` and return its wall time (process start included) and peak RSS."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert proc.stdout is not None
    output = proc.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{output[-3000:]}")
    cpu = usage.ru_utime + usage.ru_stime
    return Measured(seconds, usage.ru_maxrss / 1024, output, cpu)


def telemetry_file(n_events: int, seed: int = 1) -> Path:
    """A cached JSON-lines file of ``n_events`` generated telemetry events."""
    DATA.mkdir(parents=True, exist_ok=True)
    path = DATA / f"telemetry_{n_events}_{seed}.jsonl"
    if not path.exists():
        # In a child process: a process started later inherits this one's peak RSS (Linux
        # keeps ru_maxrss across fork + exec), which would inflate every measured figure.
        tmp = path.with_suffix(".tmp")
        script = (
            "import sys; from sluice.sources import synthetic; "
            "synthetic.write_jsonl(synthetic.telemetry(int(sys.argv[1]), n_devices=100, "
            "seed=int(sys.argv[2]), labels=False), sys.argv[3])"
        )
        subprocess.run([python(), "-c", script, str(n_events), str(seed), str(tmp)], check=True)
        tmp.rename(path)
    return path


def machine() -> str:
    """One line describing the machine the figures come from."""
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()},"
        f" {platform.system()} {platform.release()}"
    )


def python() -> str:
    """The interpreter running the benchmark (children use the same)."""
    return sys.executable


def run_sluice(pipeline: Path, home: Path, src: str | None = None) -> Measured:
    """`sluice run PIPELINE --until-idle` in a fresh SLUICE_HOME ``home`` (emptied first);
    ``src``: the code to import instead of this checkout's (another checkout's ``src``)."""
    import shutil

    shutil.rmtree(home, ignore_errors=True)
    env = {"SLUICE_HOME": str(home), **({"PYTHONPATH": src} if src is not None else {})}
    return run_measured(
        [python(), "-m", "sluice.cli", "run", str(pipeline), "--until-idle", "--quiet"], env=env
    )


def write_result(name: str, lines: list[str]) -> None:
    """Write benchmarks/results/NAME.md (a BENCHMARKS.md section) and print it."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.md").write_text("\n".join(lines))
    print("\n".join(lines))
