"""End-to-end throughput of `sluice run` vs a DuckDB-only baseline doing the same work.

Workload: N generated telemetry events in JSON lines → parse, validate, filter, derive,
1-minute tumbling window per device → lake + warehouse. Both sides run as fresh processes,
process start included, in the same invocation. Usage: python benchmarks/throughput.py [--quick]
[--events N ...] [--rounds R] [--before OLD/src] (older code measured alongside, alternating)
[--polars DIR] (also a Polars micro-batch loop doing the same work, with polars importable
from the environment or from DIR, e.g. ``pip install --target DIR polars``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from common import (
    TELEMETRY_FILE_PIPELINE,
    Measured,
    machine,
    python,
    run_measured,
    telemetry_file,
    write_result,
)

PIPELINE = (
    "name: bench\n"
    + TELEMETRY_FILE_PIPELINE
    + """\
  - derive: {{temp_c: "(temperature - 32) * 5 / 9"}}
  - window: {{key: device_id, size: 1m, aggregate: {{temp_mean: "avg(temp_c)",
      pressure_max: "max(pressure)", n: "count(*)"}}{into}}}
sinks:
  - {{type: lake, table: {table}}}
  - {{type: warehouse, table: {table}}}
"""
)

BASELINE = """\
import duckdb, sys
con = duckdb.connect(sys.argv[2])
con.execute('''CREATE TABLE bench AS
  SELECT device_id, time_bucket(INTERVAL 1 minute, ts) AS window_start,
         avg((temperature - 32) * 5 / 9) AS temp_mean, max(pressure) AS pressure_max,
         count(*) AS n
  FROM read_json(?, format='newline_delimited', columns={device_id: 'VARCHAR',
       ts: 'TIMESTAMPTZ', temperature: 'DOUBLE', pressure: 'DOUBLE', vibration: 'DOUBLE',
       status: 'VARCHAR'})
  WHERE status <> 'maintenance' GROUP BY ALL''', [sys.argv[1]])
con.execute("COPY bench TO '" + sys.argv[3] + "' (FORMAT parquet)")
"""


# The same work in Polars, in micro-batches of 200k events like Sluice's epochs: each batch
# parsed, filtered, derived and aggregated per (device, minute); the partial aggregates are
# merged at the end and written to Parquet and a DuckDB table. No exactly-once, no dead letters.
POLARS = """\
import io, sys
import duckdb, polars as pl
path, db, out = sys.argv[1:4]
schema = {"device_id": pl.String, "ts": pl.String, "temperature": pl.Float64,
          "pressure": pl.Float64, "vibration": pl.Float64, "status": pl.String}
partials, rest = [], b""
with open(path, "rb") as f:
    while True:
        block = f.read(32 << 20)
        data = rest + block
        cut = len(data) if not block else data.rfind(b"\\n") + 1
        chunk, rest = data[:cut], data[cut:]
        frame = pl.read_ndjson(io.BytesIO(chunk), schema=schema) if chunk else None
        for start in range(0, frame.height if frame is not None else 0, 200_000):
            partials.append(
                frame.slice(start, 200_000)
                .with_columns(pl.col("ts").str.to_datetime(time_zone="UTC"))
                .filter(pl.col("status") != "maintenance")
                .with_columns(((pl.col("temperature") - 32) * 5 / 9).alias("temp_c"))
                .group_by("device_id", pl.col("ts").dt.truncate("1m").alias("window_start"))
                .agg(pl.col("temp_c").sum().alias("s"), pl.col("temp_c").count().alias("c"),
                     pl.col("pressure").max().alias("pressure_max"), pl.len().alias("n"))
            )
        if not block:
            break
windows = pl.concat(partials).group_by("device_id", "window_start").agg(
    (pl.col("s").sum() / pl.col("c").sum()).alias("temp_mean"),
    pl.col("pressure_max").max(), pl.col("n").sum())
windows.write_parquet(out)
con = duckdb.connect(db)
con.register("w", windows.to_arrow())
con.execute("CREATE TABLE bench AS SELECT * FROM w")
"""


def polars_env(where: Path | None) -> dict[str, str] | None:
    """The environment in which ``import polars`` works (None: polars is not available)."""
    env = {}
    if where is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(where), os.environ.get("PYTHONPATH", "")])
    found = subprocess.run(
        [python(), "-c", "import polars"], env={**os.environ, **env}, capture_output=True
    )
    return env if found.returncode == 0 else None


def run_polars(data: Path, work: Path, env: dict[str, str]) -> Measured:
    """The Polars micro-batch loop above (process start and ``import polars`` included)."""
    script = work / "polars_loop.py"
    script.write_text(POLARS)
    (work / "polars.duckdb").unlink(missing_ok=True)
    return run_measured(
        [python(), str(script), str(data), str(work / "polars.duckdb"), str(work / "pl.parquet")],
        env=env,
    )


def run_baseline(data: Path, work: Path) -> Measured:
    """One DuckDB query: read_json → filter/derive → GROUP BY window → warehouse + Parquet."""
    script = work / "baseline.py"
    script.write_text(BASELINE)
    (work / "base.duckdb").unlink(missing_ok=True)
    return run_measured(
        [python(), str(script), str(data), str(work / "base.duckdb"), str(work / "base.parquet")]
    )


SRC = Path(__file__).resolve().parents[1] / "src"


def run_sluice(data: Path, work: Path, *, into: bool, src: Path = SRC) -> Measured:
    """`sluice run --until-idle` on the pipeline above in a fresh SLUICE_HOME (code in ``src``)."""
    home = work / ("home_into" if into else "home")
    shutil.rmtree(home, ignore_errors=True)
    pipeline = work / "bench.yaml"
    pipeline.write_text(
        PIPELINE.format(
            data=data, into=", into: bench_1m" if into else "", table="events" if into else "bench"
        )
    )
    return run_measured(
        [python(), "-m", "sluice.cli", "run", str(pipeline), "--until-idle", "--quiet"],
        env={"SLUICE_HOME": str(home), "PYTHONPATH": str(src)},
    )


@dataclass
class Row:
    """Best-of-N figures of one event count: baseline, this code, and (optionally) before."""

    events: int
    base: Measured
    agg: Measured
    full: Measured
    before: tuple[Measured, Measured] | None = None
    polars: Measured | None = None


def best(runs: list[Measured]) -> Measured:
    """The fastest run (the one least disturbed by other jobs on the machine)."""
    return min(runs, key=lambda m: m.seconds)


def measure(
    data: Path,
    work: Path,
    n: int,
    rounds: int,
    before: Path | None,
    polars: dict[str, str] | None = None,
) -> Row:
    """Alternate baseline, this code, (``before``) the old code and (``polars``) the Polars
    loop, ``rounds`` times."""
    runs: dict[str, list[Measured]] = {}
    for _ in range(rounds):
        sides: list[tuple[str, Path | None, bool]] = [
            ("base", None, False),
            ("agg", SRC, False),
            ("full", SRC, True),
        ]
        if before is not None:
            sides += [("before_agg", before, False), ("before_full", before, True)]
        if polars is not None:
            sides.append(("polars", None, True))
        for name, src, into in sides:
            if name == "polars":
                assert polars is not None
                run = run_polars(data, work, polars)
            elif src is None:
                run = run_baseline(data, work)
            else:
                run = run_sluice(data, work, into=into, src=src)
            runs.setdefault(name, []).append(run)
    row = Row(n, best(runs["base"]), best(runs["agg"]), best(runs["full"]))
    if before is not None:
        row.before = (best(runs["before_agg"]), best(runs["before_full"]))
    if polars is not None:
        row.polars = best(runs["polars"])
    return row


def main() -> None:
    """Measure and write benchmarks/results/throughput.md."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="200k/1M events instead of 1M/5M")
    parser.add_argument("--events", type=int, nargs="+", help="event counts to measure")
    parser.add_argument("--rounds", type=int, default=1, help="best of this many runs each")
    parser.add_argument(
        "--before", type=Path, help="a src/ directory of older code to measure alongside"
    )
    parser.add_argument(
        "--polars", type=Path, help="a directory holding polars (else: the environment's)"
    )
    args = parser.parse_args()
    polars = polars_env(args.polars)
    sizes = args.events or ([200_000, 1_000_000] if args.quick else [1_000_000, 5_000_000])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for n in sizes:
            data = telemetry_file(n)
            row = measure(data, work, n, args.rounds, args.before, polars)
            rows.append(row)
            print(
                f"{n:>9,} events: baseline {n / row.base.seconds:,.0f}/s, sluice "
                f"{n / row.agg.seconds:,.0f}/s ({row.base.seconds / row.agg.seconds:.2f}x), "
                f"events+windows {n / row.full.seconds:,.0f}/s"
            )
    write_report(rows, args.rounds, polars is not None)


def rate(n: int, m: Measured) -> str:
    """``N ev/s (S s, C s CPU)`` for one measured run."""
    return f"{n / m.seconds:,.0f} ev/s ({m.seconds:.2f} s, {m.cpu_seconds:.2f} s CPU)"


def write_report(rows: list[Row], rounds: int, with_polars: bool) -> None:
    """Write the markdown section for BENCHMARKS.md."""
    lines = [
        "## End-to-end throughput (`benchmarks/throughput.py`)",
        "",
        f"Machine: {machine()}. Each figure is one fresh process, start-up included; "
        f"best of {rounds} runs, the sides alternating in one invocation.",
        "",
        "| events | code | DuckDB-only baseline | Sluice (windows → lake + warehouse) | ratio | "
        "Sluice (events → lake + warehouse, windows `into`) | ratio | peak RSS Sluice |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        n, base = row.events, row.base
        sides = [("this code", row.agg, row.full)]
        if row.before is not None:
            sides.insert(0, ("before", *row.before))
        for label, agg, full in sides:
            lines.append(
                f"| {n:,} | {label} | {rate(n, base)} | {rate(n, agg)} | "
                f"**{base.seconds / agg.seconds:.2f}x** | {rate(n, full)} | "
                f"**{base.seconds / full.seconds:.2f}x** | "
                f"{agg.peak_rss_mb:,.0f} MB / {full.peak_rss_mb:,.0f} MB |"
            )
    small, large = rows[0], rows[-1]
    lines += [
        "",
        f"Peak RSS {large.events:,} vs {small.events:,} events: "
        f"{large.agg.peak_rss_mb / small.agg.peak_rss_mb:.2f}x (windows only), "
        f"{large.full.peak_rss_mb / small.full.peak_rss_mb:.2f}x (events + windows) — "
        "bounded memory means close to 1.0x.",
        "",
    ]
    for row in rows:
        if row.polars is not None:
            lines += [
                f"Polars micro-batch loop (same work, 200k-event batches, {row.events:,} "
                f"events): {rate(row.events, row.polars)}, "
                f"**{row.base.seconds / row.polars.seconds:.2f}x** the DuckDB-only query; "
                f"Polars / Sluice (windows): **{row.agg.seconds / row.polars.seconds:.2f}x**.",
                "",
            ]
    if not with_polars:
        lines += ["Polars micro-batch loop: polars is not importable here (`--polars DIR`).", ""]
    write_result("throughput", lines)


if __name__ == "__main__":
    main()
