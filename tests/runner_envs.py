"""Engines for the runner conformance tests: one small Spark session, a Beam environment.

Apache Beam pins ``pyarrow`` below the version Sluice's own environment uses, so Beam runs in
a separate virtual environment with Sluice's dependencies and ``apache-beam`` (the newest
release pip resolves with them), built once per dependency set and kept under
``~/.cache/sluice`` (``SLUICE_BEAM_VENV`` overrides the folder). Sluice itself is taken from
this checkout through ``PYTHONPATH``, so the cached environment serves every checkout.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PLUGINS = ROOT / "tests" / "plugins"  # test-only plugins, registered by a dist-info folder


def spark_session() -> Any:
    """A ``local[2]`` session (a failed task is tried twice), small shuffles, UTC, quiet.

    Its Python workers see this checkout and the test plugins (``PYTHONPATH``).
    """
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    before = os.environ.get("PYTHONPATH")
    paths = [str(SRC), str(ROOT), str(PLUGINS), before or ""]
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)  # the JVM inherits it
    from pyspark.sql import SparkSession

    try:
        session = (
            SparkSession.builder.master("local[2,2]")
            .appName("sluice-tests")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.shuffle.partitions", "4")
            .config("spark.sql.session.timeZone", "UTC")
            .getOrCreate()
        )
    finally:  # later subprocesses of the test session must not see the test plugins
        if before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = before
    session.sparkContext.setLogLevel("ERROR")
    return session


def beam_requirements() -> list[str]:
    """Sluice's dependencies plus the ``beam`` extra, as pip requirements."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *project["optional-dependencies"]["beam"]]


def beam_python() -> Path:
    """The Python of the Beam environment, created (a few minutes) when missing or stale."""
    requirements = beam_requirements()
    digest = hashlib.sha256("\n".join(requirements).encode()).hexdigest()[:12]
    default = Path.home() / ".cache" / "sluice" / f"beam-venv-{digest}"
    venv = Path(os.environ.get("SLUICE_BEAM_VENV", default))
    python = venv / "bin" / "python"
    stamp = venv / ".requirements"
    if python.exists() and stamp.exists() and stamp.read_text() == digest:
        return python
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", *requirements],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    stamp.write_text(digest)
    return python


def run_cli(python: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``sluice ARGS`` from this checkout under ``python``, with ``SLUICE_HOME=home``."""
    env = {**os.environ, "SLUICE_HOME": str(home), "PYTHONPATH": str(SRC)}
    return subprocess.run(
        [str(python), "-m", "sluice.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
