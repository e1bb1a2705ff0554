"""Benchmark the actions layer; writes ``benchmarks/results/actions.md``.

1. Rule evaluation: ``ActionEngine.evaluate`` with 20 rules over 1M scored rows, against
   a baseline transform chain (filter, derive, 1-minute window aggregate joined back)
   run by DuckDB in the same process. Target: evaluate < 10% of the chain's time.
2. Dispatcher: webhook deliveries per second to a local uvicorn receiver (separate
   process, keep-alive). Target: >= 1,000/s.
3. A whole pipeline (`sluice run`, fresh processes) with and without the 20 rules.

Run: ``python benchmarks/actions.py [--rows 1000000] [--deliveries 5000] [--events 1000000]
[--rounds 2] [--before OLD/src] [--only pipeline|instructions]``; ``--before`` runs the 20-rule
pipeline on another source tree too, alternating with the others in the same invocation;
``--only pipeline`` runs and prints only that comparison (the results file is left as it is).

``--only instructions`` runs the pipeline once without and once with the rules under
``valgrind --tool=callgrind`` and prints the instructions each executed (all threads). On a
shared machine CPU seconds move with the load (the other core's work slows this one's), more
than the rules cost; instruction counts do not. It takes about 15 minutes per run, and the
run is about 100 times slower, so the rules' rate limits (per wall-clock minute) let more
actions through than in a normal run: the emitted count is printed, and the figure is an
upper bound.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import duckdb
import httpx
import numpy as np
import pyarrow as pa
from common import TELEMETRY_FILE_PIPELINE, python, run_measured, telemetry_file

from sluice.actions.engine import ActionEngine
from sluice.config.models import ActionConfig
from sluice.core.context import EpochContext
from sluice.core.settings import Settings
from sluice.storage.checkpoints import CheckpointStore

RESULTS = Path(__file__).parent / "results" / "actions.md"
PIPELINE = (
    "name: rules\n"
    + TELEMETRY_FILE_PIPELINE
    + """\
  - derive: {{device: "device_id", temp_c: "(temperature - 32) * 5 / 9"}}
models:
  - {{name: m, type: online_anomaly, features: [temperature, pressure], key: device}}
actions: {actions}
sinks:
  - {{type: lake, table: events}}
"""
)
# ruff: noqa: E501  (the report table rows are long Markdown lines)
RECEIVER = textwrap.dedent("""
    import sys, uvicorn
    count = 0
    async def app(scope, receive, send):
        global count
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        if scope["method"] == "POST":
            count += 1
        body = str(count).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
                access_log=False)
""")


def scored_rows(n: int, seed: int = 42) -> pa.Table:
    """A scored telemetry batch: 1,000 devices, ~0.5% anomalies with a reason."""
    rng = np.random.default_rng(seed)
    anomaly = rng.random(n) < 0.005
    start = 1_700_000_000_000_000
    return pa.table(
        {
            "device": pa.array([f"dev-{i:04d}" for i in rng.integers(0, 1000, n)]),
            "ts": pa.array(
                start + np.sort(rng.integers(0, 600_000_000, n)), pa.timestamp("us", tz="UTC")
            ),
            "temperature": rng.normal(150, 15, n) + anomaly * 60,
            "pressure": rng.normal(30, 3, n),
            "status": pa.array(np.where(rng.random(n) < 0.02, "maintenance", "ok")),
            "m_score": np.clip(rng.normal(0.2, 0.1, n) + anomaly * 0.7, 0, 1),
            "m_anomaly": anomaly,
            "m_reason": pa.array(np.where(anomaly, "temperature 4.2 sigma", None)),
        }
    )


def baseline_chain(con: duckdb.DuckDBPyConnection, table: pa.Table) -> pa.Table:
    """A typical transform chain: filter, derive, window aggregate joined back."""
    con.register("src", table)
    out = con.sql("""
        WITH f AS (SELECT *, (temperature - 32) * 5 / 9 AS temp_c,
                          pressure / 14.7 AS pressure_atm
                   FROM src WHERE status <> 'maintenance'),
             w AS (SELECT device, time_bucket(INTERVAL 1 minute, ts) AS bucket,
                          avg(temp_c) AS temp_mean, count(*) AS n
                   FROM f GROUP BY ALL)
        SELECT f.*, w.temp_mean, w.n FROM f
        JOIN w ON f.device = w.device AND time_bucket(INTERVAL 1 minute, f.ts) = w.bucket
    """).to_arrow_table()
    con.unregister("src")
    return out


def rule_dicts(log_path: str, hot: float = 170, pressure: float = 20) -> list[dict[str, Any]]:
    """20 realistic rules: plain, dedupe, for (per device), rate limit, cooldown."""
    rules: list[dict[str, Any]] = []
    for i in range(20):
        rule: dict[str, Any] = {
            "name": f"r{i}",
            "type": "log",
            "path": log_path,
            "when": f"m_anomaly AND temperature > {hot + i}",
        }
        if i % 4 == 0:
            rule["dedupe"] = {"key": "device", "window": "10m"}
        elif i % 4 == 1:
            # the score is 1 - a calibrated tail probability: alerts for 2 events in a row
            rule.update(
                {"group_by": "device", "for": 2, "when": f"m_anomaly AND m_score > 0.99{i:02d}"}
            )
        elif i % 4 == 2:
            rule.update(
                {"rate_limit": "100/m", "when": f"m_score > 0.99 AND pressure > {pressure + i}"}
            )
        else:
            rule.update({"cooldown": "1m", "severity": "critical"})
        rules.append(rule)
    return rules


def twenty_rules(log_path: str) -> list[ActionConfig]:
    """:func:`rule_dicts` as action configs, for the in-process measurement."""
    return [ActionConfig(**r) for r in rule_dicts(log_path)]


def score_seconds(table: pa.Table, home: Path) -> float:
    """Seconds the real ``online_anomaly`` model takes to score (and learn) ``table``."""
    from sluice.config.models import ModelConfig
    from sluice.models.base import ModelContext, create_model

    model = create_model(
        ModelConfig(
            name="m", type="online_anomaly", features=["temperature", "pressure"], key="device"
        ),
        ModelContext("bench", Settings(home=home)),
    )
    model.score(table.slice(0, 10_000))
    started = time.perf_counter()
    model.score(table)
    return time.perf_counter() - started


def bench_rules(rows: int, home: Path) -> dict[str, float]:
    """Median seconds of the baseline chain, model scoring and evaluate() with 20 rules."""
    table = scored_rows(rows)
    con = duckdb.connect()
    baseline_chain(con, table)
    chain_times, eval_times, emitted = [], [], 0
    scoring = score_seconds(table, home)
    for rep in range(3):
        started = time.perf_counter()
        baseline_chain(con, table)
        chain_times.append(time.perf_counter() - started)
        engine = ActionEngine(
            twenty_rules(str(home / "log.jsonl")),
            pipeline=f"b{rep}",
            settings=Settings(home=home),
            event_time="ts",
            dispatch=False,
        ).start()
        started = time.perf_counter()
        pending = engine.evaluate(table, EpochContext(f"b{rep}", 1))
        eval_times.append(time.perf_counter() - started)
        emitted = len(pending.records)
        engine.close()
    chain, evaluate = statistics.median(chain_times), statistics.median(eval_times)
    return {
        "rows": rows,
        "chain_s": chain,
        "evaluate_s": evaluate,
        "score_s": scoring,
        "ratio": evaluate / chain,
        "epoch_ratio": evaluate / (chain + scoring),
        "emitted": emitted,
    }


def bench_pipeline(
    events: int, work: Path, rounds: int = 2, before: Path | None = None
) -> dict[str, Any]:
    """Best seconds of `sluice run` over a file with and without the 20 rules, alternating,
    and the quartiles of the ratio within each round.

    With ``before`` (a source tree), the 20-rule pipeline also runs on that code.
    """
    data = telemetry_file(events)
    work.mkdir(parents=True, exist_ok=True)
    # the generator's telemetry runs at 59-88 degrees and 95-115 units of pressure
    rules = rule_dicts(str(work / "actions.jsonl"), hot=75, pressure=95)
    variants = {"without": "", "with": json.dumps(rules)}
    if before is not None:
        variants["before"] = variants["with"]
    walls: dict[str, list[float]] = {name: [] for name in variants}
    cpus: dict[str, list[float]] = {name: [] for name in variants}  # user + system
    for _ in range(rounds):
        for name, actions in variants.items():
            home = work / f"home-{name}"
            shutil.rmtree(home, ignore_errors=True)
            pipeline = work / f"{name}.yaml"
            pipeline.write_text(PIPELINE.format(data=data, actions=actions or "[]"))
            env = {"SLUICE_HOME": str(home)}
            if name == "before" and before is not None:
                env["PYTHONPATH"] = str(before.resolve())
            measured = run_measured(
                [python(), "-m", "sluice.cli", "run", str(pipeline), "--until-idle", "--quiet"],
                env=env,
            )
            walls[name].append(measured.seconds)
            cpus[name].append(measured.cpu_seconds)
    best = {name: min(times) for name, times in walls.items()}
    cpu = {name: min(times) for name, times in cpus.items()}
    median = {name: statistics.median(times) for name, times in cpus.items()}
    runs = rounds * (len(variants) - 1)
    # each round runs the variants back to back: the ratio within a round cancels the slow
    # drifts of a shared machine that move the best of each variant apart
    paired = {
        name: sorted(w / base - 1.0 for w, base in zip(walls[name], walls["without"], strict=True))
        for name in variants
        if name != "without"
    }
    emitted = sum(1 for _ in (work / "actions.jsonl").open()) // runs
    return {
        "events": events,
        "without_s": best["without"],
        "with_s": best["with"],
        "before_s": best.get("before", float("nan")),
        "added": best["with"] / best["without"] - 1.0,
        "added_before": best.get("before", float("nan")) / best["without"] - 1.0,
        "cpu_without": cpu["without"],
        "cpu_with": cpu["with"],
        "cpu_before": cpu.get("before", float("nan")),
        "emitted": emitted,
        # medians of CPU: a round that drew a quiet moment moves the best a lot
        "median_cpu_without": median["without"],
        "median_cpu_with": median["with"],
        "median_cpu_before": median.get("before", float("nan")),
        "median_cpu_added": median["with"] / median["without"] - 1.0,
        "median_cpu_added_before": median.get("before", float("nan")) / median["without"] - 1.0,
        # the median and quartiles over rounds of (with / without - 1), wall time
        "paired_added": _quartiles(paired["with"]),
        "paired_added_before": _quartiles(paired["before"]) if "before" in paired else None,
    }


def _quartiles(values: list[float]) -> list[float]:
    """[first quartile, median, third quartile] of ``values``."""
    if len(values) < 2:
        return [values[0]] * 3 if values else []
    q1, q2, q3 = statistics.quantiles(values, n=4)
    return [q1, q2, q3]


def bench_instructions(events: int, work: Path) -> dict[str, Any]:
    """Instructions executed by `sluice run` without and with the 20 rules (callgrind)."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("--only instructions needs valgrind (apt-get install valgrind)")
    data = telemetry_file(events)
    work.mkdir(parents=True, exist_ok=True)
    log = work / "actions.jsonl"
    rules = rule_dicts(str(log), hot=75, pressure=95)
    out: dict[str, Any] = {"events": events}
    for name, actions in (("without", "[]"), ("with", json.dumps(rules))):
        pipeline = work / f"{name}.yaml"
        pipeline.write_text(PIPELINE.format(data=data, actions=actions))
        run = [python(), "-m", "sluice.cli", "run", str(pipeline), "--until-idle", "--quiet"]
        # a plain run first: numba's kernels cached on disk, as in any later run
        run_measured(run, env={"SLUICE_HOME": str(work / f"warm-{name}")})
        log.unlink(missing_ok=True)
        # OpenBLAS's idle threads spin waiting for work: under callgrind, which runs one
        # thread at a time, their count follows the scheduling, not the pipeline's work
        measured = run_measured(
            [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null", *run],
            env={"SLUICE_HOME": str(work / f"home-{name}"), "OPENBLAS_NUM_THREADS": "1"},
        )
        counted = [line for line in measured.output.splitlines() if "I   refs:" in line]
        out[f"instructions_{name}"] = int(counted[-1].split(":")[-1].replace(",", ""))
        out[f"emitted_{name}"] = sum(1 for _ in log.open()) if log.exists() else 0
    out["added"] = out["instructions_with"] / out["instructions_without"] - 1.0
    return out


def bench_dispatch(deliveries: int, home: Path) -> dict[str, float]:
    """Deliveries per second from the outbox to a uvicorn receiver."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    home.mkdir(parents=True, exist_ok=True)
    script = home / "receiver.py"
    script.write_text(RECEIVER)
    server = subprocess.Popen([sys.executable, str(script), str(port)])
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "receiver did not start"
                time.sleep(0.1)
        engine = ActionEngine(
            [
                ActionConfig(
                    name="hook", when="true", type="webhook", url=f"{url}/hook", key="device"
                )
            ],
            pipeline="dispatch",
            settings=Settings(home=home),
            dispatch=False,
            dispatcher_options={"workers": 8, "batch_size": 1000},
        ).start()
        table = pa.table({"device": [f"d{i % 200}" for i in range(deliveries)]})
        pending = engine.evaluate(table, EpochContext("dispatch", 1))
        CheckpointStore(engine.db).commit("dispatch", 1, {}, {}, [engine.outbox_writer(pending, 1)])
        started = time.perf_counter()
        delivered = 0
        while done := engine.dispatcher.run_once():
            delivered += done
        elapsed = time.perf_counter() - started
        engine.close()
        received = int(httpx.get(url).text)
    finally:
        server.terminate()
        server.wait(10)
    return {
        "deliveries": delivered,
        "received": received,
        "seconds": elapsed,
        "per_second": delivered / elapsed,
    }


def main() -> None:
    """Run both benchmarks and write the results file."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--deliveries", type=int, default=5_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2, help="pipeline runs of each variant")
    parser.add_argument(
        "--before", type=Path, help="a source tree (e.g. main's src) to run the rules on too"
    )
    parser.add_argument(
        "--only",
        choices=["pipeline", "instructions"],
        help="only the whole-pipeline comparison, in seconds or in instructions (printed)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.only == "instructions":
            print(json.dumps(bench_instructions(args.events, Path(tmp) / "ir"), indent=1))
            return
        pipe = bench_pipeline(
            args.events, Path(tmp) / "pipeline", rounds=args.rounds, before=args.before
        )
        if args.only == "pipeline":
            print(json.dumps(pipe, indent=1))
            return
        rules = bench_rules(args.rows, Path(tmp) / "rules")
        dispatch = bench_dispatch(args.deliveries, Path(tmp) / "dispatch")
    before_rows = (
        f"| with 20 rules, the code of `--before {args.before}` "
        f"| {pipe['before_s']:.2f} | {pipe['events'] / pipe['before_s']:,.0f} "
        f"| {pipe['cpu_before']:.2f} |\n"
        f"| time added by the rules before | | {pipe['added_before']:.1%} "
        f"| {pipe['cpu_before'] / pipe['cpu_without'] - 1:.1%} |\n"
        if args.before is not None
        else ""
    )
    text = textwrap.dedent(f"""\
        ## Actions (`benchmarks/actions.py`)

        Machine: shared 2-core box; `python benchmarks/actions.py` (median of 3 for rules).

        ### Rule evaluation (20 rules, {rules["rows"]:,} scored rows, event time)

        | step | seconds |
        |---|---|
        | baseline transform chain (filter, derive, 1-min window joined back; DuckDB) | {rules["chain_s"]:.3f} |
        | `ActionEngine.evaluate` (20 rules: dedupe, for, rate limit, cooldown) | {rules["evaluate_s"]:.3f} |
        | `online_anomaly` score + learn (2 features, 1,000 keys) | {rules["score_s"]:.3f} |
        | evaluate / chain (DuckDB transforms only) | {rules["ratio"]:.1%} |
        | **evaluate / (chain + scoring)** = share added to an epoch without sinks | **{rules["epoch_ratio"]:.1%}** (target < 10%) |

        Records emitted: {rules["emitted"]:,}.

        ### A whole pipeline with and without the 20 rules (`sluice run`)

        {pipe["events"]:,} generated telemetry events from a JSON-lines file: filter, derive,
        `online_anomaly` per device, lake sink; the same pipeline with the 20 rules above
        (thresholds moved into the generator's value range, `log` actions, outbox and
        dispatcher included). Fresh processes, alternating, best of {args.rounds} each.

        | pipeline | seconds | events/s | CPU seconds (user + system) |
        |---|---|---|---|
        | without rules | {pipe["without_s"]:.2f} | {pipe["events"] / pipe["without_s"]:,.0f} | {pipe["cpu_without"]:.2f} |
        | with 20 rules | {pipe["with_s"]:.2f} | {pipe["events"] / pipe["with_s"]:,.0f} | {pipe["cpu_with"]:.2f} |
        | **time added by the rules** | | **{pipe["added"]:.1%}** (target < 10%) | {pipe["cpu_with"] / pipe["cpu_without"] - 1:.1%} |
        @BEFORE@

        Within each round (the variants run back to back), with / without - 1: median
        **{pipe["paired_added"][1]:.1%}**, quartiles {pipe["paired_added"][0]:.1%} to
        {pipe["paired_added"][2]:.1%}.

        Actions emitted per run: {pipe["emitted"]:,}.

        ### Dispatcher (webhook to a local uvicorn receiver, keep-alive, 8 workers)

        | deliveries | received | seconds | deliveries/s |
        |---|---|---|---|
        | {dispatch["deliveries"]:,} | {dispatch["received"]:,} | {dispatch["seconds"]:.2f} | **{dispatch["per_second"]:,.0f}** (target >= 1,000) |
        """)
    text = text.replace("@BEFORE@\n", before_rows)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
