"""Pathway 0.33 baseline: the Kafka benchmark's pipeline (run by ``benchmarks/kafka.py``).

JSON parse (Pathway's Kafka reader with a schema) → filter → derive → 1-minute tumbling window
per device (``windowby``, written to its own file) → per-device rolling z-score (``zscore.py``,
in a Python UDF: Pathway has no per-event stateful map, so this state lives outside Pathway's
own state and rows are scored in the order Pathway hands them over) → CSV file. Pathway's
Delta Lake writer needs a license key (free, but fetched online), so both outputs are
``pw.io.csv.write``, the closest writer without one. The reader streams (``static`` mode
stops early on tansu, whose watermarks are wrong); a subscription to the running count of
scored events stops the run once all KEPT events (those not filtered out of the first EVENTS)
are scored. Usage:
``python pathway_pipeline.py BOOTSTRAP TOPIC EVENTS KEPT OUT_DIR [LIBRDKAFKA_JSON]``; prints
one JSON line: events/s from the first event scored to the last (the first batch's reading
and parsing, which Pathway does before scoring anything, is not counted).
"""

from __future__ import annotations

import contextlib
import json
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from time import perf_counter

import pathway as pw
import zscore

FEATURES = 2


class Event(pw.Schema):
    """One telemetry event as produced by the benchmark."""

    device_id: str
    ts: str
    temperature: float
    pressure: float
    vibration: float
    status: str


class DoneError(Exception):
    """Raised from the subscription to end the run once every event was read."""


def main() -> None:
    """Run the pipeline over the topic and print the rate."""
    bootstrap, topic, n, kept = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    out = Path(sys.argv[5])
    extra = json.loads(sys.argv[6]) if len(sys.argv) > 6 else {}
    states: dict[str, list[float]] = {}
    marks: list[tuple[float, int]] = []
    first: list[float] = []

    @pw.udf
    def anomaly_score(device: str, temp_c: float, pressure: float) -> float:
        if not first:
            first.append(perf_counter())
        state = states.get(device)
        if state is None:
            state = states[device] = zscore.fresh(FEATURES)
        return zscore.score_learn(state, [temp_c, pressure])

    events = pw.io.kafka.read(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"pathway-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "session.timeout.ms": "6000",
            **{key: str(value) for key, value in extra.items()},
        },
        topic,
        schema=Event,
        format="json",
    )

    events = events.filter(pw.this.status != "maintenance")
    events = events.with_columns(
        temp_c=(pw.this.temperature - 32) * 5 / 9,
        ts=pw.this.ts.dt.strptime("%Y-%m-%dT%H:%M:%S.%fZ"),  # UTC, kept naive
    )
    windows = events.windowby(
        pw.this.ts, window=pw.temporal.tumbling(timedelta(minutes=1)), instance=pw.this.device_id
    ).reduce(
        device_id=pw.this._pw_instance,
        window_start=pw.this._pw_window_start,
        temp_mean=pw.reducers.avg(pw.this.temp_c),
        n=pw.reducers.count(),
    )
    scored = events.with_columns(
        temp_anomaly_score=anomaly_score(pw.this.device_id, pw.this.temp_c, pw.this.pressure)
    )
    scored = scored.with_columns(temp_anomaly=pw.this.temp_anomaly_score > zscore.THRESHOLD)

    def on_count(key: object, row: dict, time: int, is_addition: bool) -> None:
        if is_addition:
            marks.append((perf_counter(), row["n"]))
            if row["n"] >= kept:
                raise DoneError

    pw.io.subscribe(scored.reduce(n=pw.reducers.count()), on_count)
    out.mkdir(parents=True, exist_ok=True)
    pw.io.csv.write(windows, str(out / "windows.csv"))
    pw.io.csv.write(scored, str(out / "events.csv"))
    with contextlib.suppress(DoneError):
        pw.run(monitoring_level=pw.MonitoringLevel.NONE)
    last_t, last_n = marks[-1] if marks else (0.0, 0)
    if last_n < kept:
        raise SystemExit(f"scored {last_n} of {kept} events")
    seconds = last_t - first[0]
    print(json.dumps({"events": n, "seconds": seconds, "rate": n / seconds}))


if __name__ == "__main__":
    main()
