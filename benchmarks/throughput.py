"""End-to-end throughput of `sluice run` vs a DuckDB-only baseline doing the same work.

Workload: N generated telemetry events in JSON lines → parse, validate, filter, derive,
1-minute tumbling window per device → lake + warehouse. Both sides run as fresh processes,
process start included, in the same invocation. Usage: python benchmarks/throughput.py [--quick]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
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


def run_baseline(data: Path, work: Path) -> Measured:
    """One DuckDB query: read_json → filter/derive → GROUP BY window → warehouse + Parquet."""
    script = work / "baseline.py"
    script.write_text(BASELINE)
    (work / "base.duckdb").unlink(missing_ok=True)
    return run_measured(
        [python(), str(script), str(data), str(work / "base.duckdb"), str(work / "base.parquet")]
    )


def run_sluice(data: Path, work: Path, *, into: bool) -> Measured:
    """`sluice run --until-idle` on the pipeline above in a fresh SLUICE_HOME."""
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
        env={"SLUICE_HOME": str(home)},
    )


def main() -> None:
    """Measure and write benchmarks/results/throughput.md."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="200k/1M events instead of 1M/5M")
    parser.add_argument("--events", type=int, nargs="+", help="event counts to measure")
    args = parser.parse_args()
    sizes = args.events or ([200_000, 1_000_000] if args.quick else [1_000_000, 5_000_000])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for n in sizes:
            data = telemetry_file(n)
            base = run_baseline(data, work)
            agg = run_sluice(data, work, into=False)
            full = run_sluice(data, work, into=True)
            rows.append((n, base, agg, full))
            print(
                f"{n:>9,} events: baseline {n / base.seconds:,.0f}/s, "
                f"sluice {n / agg.seconds:,.0f}/s"
                f" ({base.seconds / agg.seconds:.2f}x), events+windows {n / full.seconds:,.0f}/s"
            )
    write_report(rows)


def write_report(rows: list[tuple[int, Measured, Measured, Measured]]) -> None:
    """Write the markdown section for BENCHMARKS.md."""
    lines = [
        "## End-to-end throughput (`benchmarks/throughput.py`)",
        "",
        f"Machine: {machine()}. Each figure is one fresh process, start-up included.",
        "",
        "| events | DuckDB-only baseline | Sluice (windows → lake + warehouse) | ratio | "
        "Sluice (events → lake + warehouse, windows `into`) | ratio | peak RSS Sluice |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n, base, agg, full in rows:
        lines.append(
            f"| {n:,} | {n / base.seconds:,.0f} ev/s ({base.seconds:.2f} s) | "
            f"{n / agg.seconds:,.0f} ev/s ({agg.seconds:.2f} s) | "
            f"{base.seconds / agg.seconds:.2f}x | {n / full.seconds:,.0f} ev/s "
            f"({full.seconds:.2f} s) | {base.seconds / full.seconds:.2f}x | "
            f"{agg.peak_rss_mb:,.0f} MB / {full.peak_rss_mb:,.0f} MB |"
        )
    (small, _, s_agg, s_full), (large, _, l_agg, l_full) = rows[0], rows[-1]
    lines += [
        "",
        f"Peak RSS {large:,} vs {small:,} events: "
        f"{l_agg.peak_rss_mb / s_agg.peak_rss_mb:.2f}x (windows only), "
        f"{l_full.peak_rss_mb / s_full.peak_rss_mb:.2f}x (events + windows) — "
        "bounded memory means close to 1.0x.",
        "",
    ]
    write_result("throughput", lines)


if __name__ == "__main__":
    main()
