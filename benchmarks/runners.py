"""One pipeline file on every runner; writes ``benchmarks/results/runners.md``.

The pipeline: JSON-lines telemetry, ``filter``, ``derive``, a one-minute window ``into`` a
table, lake and warehouse sinks (``--model`` adds ``online_anomaly`` per device). It runs with
``--runner local`` (the baseline), ``--runner spark --master local[2]`` and ``--runner beam``
(DirectRunner, in the Beam environment of ``tests/runner_envs.py``), each in a fresh process
and ``SLUICE_HOME``; then the landed lake rows, window rows and warehouse rows are compared
(identical, to the bit, model columns included).
Start-up is measured separately: the same file over a one-event input.

Run: ``python benchmarks/runners.py [--events 200000] [--model] [--runners local,spark,beam]``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import duckdb
import pyarrow as pa
from common import RESULTS, TELEMETRY_FILE_PIPELINE, machine, python, run_measured, telemetry_file
from deltalake import DeltaTable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.runner_envs import SRC, beam_python  # noqa: E402

WINDOW = """\
  - derive: {{temp_c: "(temperature - 32) * 5 / 9"}}
  - window: {{key: device_id, size: 1m, into: telemetry_1m,
              aggregate: {{n: "count(*)", temp_sum: "sum(temp_c)", temp_mean: "avg(temp_c)"}}}}
"""
MODEL = """\
models:
  - {{name: temp, type: online_anomaly, features: [temp_c, pressure], key: device_id}}
"""
SINKS = """\
sinks:
  - {{type: lake, table: telemetry}}
  - {{type: warehouse, table: telemetry}}
"""


def pipeline_file(folder: Path, data: Path, model: bool) -> Path:
    """The benchmark pipeline over ``data``."""
    text = "name: runners\n" + TELEMETRY_FILE_PIPELINE + WINDOW + (MODEL if model else "") + SINKS
    path = folder / f"{data.stem}.yaml"
    path.write_text(text.format(data=data))
    return path


def run(kind: str, path: Path, home: Path) -> float:
    """Seconds for ``sluice run`` of ``path`` on runner ``kind`` (a fresh process)."""
    shutil.rmtree(home, ignore_errors=True)
    interpreter = str(beam_python()) if kind == "beam" else python()
    args = ["run", str(path), "-q", "--runner", kind]
    args += {"local": ["--until-idle"], "spark": ["--master", "local[2]"], "beam": []}[kind]
    env = {"SLUICE_HOME": str(home), "PYTHONPATH": str(SRC)}
    return run_measured([interpreter, "-m", "sluice.cli", *args], env).seconds


def landed(home: Path) -> dict[str, pa.Table]:
    """The lake rows, window rows and warehouse rows, in a stable order."""
    events = DeltaTable(str(home / "lake" / "telemetry")).to_pyarrow_table()
    windows = DeltaTable(str(home / "lake" / "telemetry_1m")).to_pyarrow_table()
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    try:
        stored = con.sql("SELECT * FROM telemetry").to_arrow_table()
    finally:
        con.close()
    by_event = [("ts", "ascending"), ("device_id", "ascending")]
    return {
        "lake": events.sort_by(by_event),
        "windows": windows.sort_by([("window_start", "ascending"), ("device_id", "ascending")]),
        "warehouse": stored.sort_by(by_event),
    }


def same(got: pa.Table, want: pa.Table) -> bool:
    """Identical tables: the same schema and rows, every value to the bit."""
    return got.equals(want)


def main() -> None:
    """Measure every runner, compare what they landed, write the report."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--model", action="store_true")
    parser.add_argument("--runners", default="local,spark,beam")
    args = parser.parse_args()
    kinds = args.runners.split(",")
    work = Path(tempfile.mkdtemp(prefix="sluice-runners-"))
    try:
        rows: list[str] = []
        data = telemetry_file(args.events)
        path = pipeline_file(work, data, args.model)
        tiny = pipeline_file(work, telemetry_file(1), args.model)
        want: dict[str, pa.Table] = {}
        base = base_start = 0.0
        for kind in kinds:
            start = run(kind, tiny, work / f"{kind}-tiny")
            seconds = run(kind, path, work / kind)
            out = landed(work / kind)
            if kind == kinds[0]:
                want, base, base_start = out, seconds, start
            verdict = ", ".join(f"{k} {'=' if same(out[k], want[k]) else '≠'}" for k in out)
            rate = args.events / seconds
            rows.append(
                f"| {kind} | {seconds:.1f} s | {rate:,.0f} ev/s | {base / seconds:.2f}x "
                f"| {start:.1f} s ({start / base_start:.1f}x) | {out['lake'].num_rows:,} "
                f"| {out['windows'].num_rows:,} | {verdict} |"
            )
            print(rows[-1], flush=True)
        write_report(args, kinds[0], rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def write_report(args: argparse.Namespace, baseline: str, rows: list[str]) -> None:
    """``results/runners.md``."""
    model = " + `online_anomaly`" if args.model else ""
    lines = [
        f"Machine: {machine()}. {args.events:,} events, filter, derive, 1-minute window "
        f"`into`{model}, lake + warehouse. Each run is a fresh process (start-up included); "
        f"ratios against `--runner {baseline}` in the same invocation.",
        "",
        "| runner | run | events/s | speed vs local | start-up (1-event input) | lake rows "
        "| window rows | landed vs local |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
        *rows,
    ]
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = f"runners{'_model' if args.model else ''}.md"
    (RESULTS / name).write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS / name}")


if __name__ == "__main__":
    main()
